import sys

from anna.routing.server import main

sys.exit(main())
