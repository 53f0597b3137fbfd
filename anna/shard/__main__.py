import sys

from anna.shard.server import main

sys.exit(main())
