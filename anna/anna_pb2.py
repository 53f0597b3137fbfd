"""The original module path of Anna's protobuf messages (``from anna.anna_pb2 import
KeyRequest``): this project's generated ``anna/proto/anna_pb2.py``."""

from anna.proto.anna_pb2 import *  # noqa: F403
