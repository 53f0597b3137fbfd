from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RT_UNSPECIFIED: _ClassVar[RequestType]
    GET: _ClassVar[RequestType]
    PUT: _ClassVar[RequestType]
    DELETE: _ClassVar[RequestType]

class LatticeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[LatticeType]
    LWW: _ClassVar[LatticeType]
    SET: _ClassVar[LatticeType]
    SINGLE_CAUSAL: _ClassVar[LatticeType]
    MULTI_CAUSAL: _ClassVar[LatticeType]
    ORDERED_SET: _ClassVar[LatticeType]
    PRIORITY: _ClassVar[LatticeType]
    TOMBSTONE: _ClassVar[LatticeType]

class AnnaError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_ERROR: _ClassVar[AnnaError]
    KEY_DNE: _ClassVar[AnnaError]
    WRONG_THREAD: _ClassVar[AnnaError]
    TIMEOUT: _ClassVar[AnnaError]
    LATTICE: _ClassVar[AnnaError]
    NO_SERVERS: _ClassVar[AnnaError]
    VALUE_TOO_LARGE: _ClassVar[AnnaError]
RT_UNSPECIFIED: RequestType
GET: RequestType
PUT: RequestType
DELETE: RequestType
NONE: LatticeType
LWW: LatticeType
SET: LatticeType
SINGLE_CAUSAL: LatticeType
MULTI_CAUSAL: LatticeType
ORDERED_SET: LatticeType
PRIORITY: LatticeType
TOMBSTONE: LatticeType
NO_ERROR: AnnaError
KEY_DNE: AnnaError
WRONG_THREAD: AnnaError
TIMEOUT: AnnaError
LATTICE: AnnaError
NO_SERVERS: AnnaError
VALUE_TOO_LARGE: AnnaError

class KeyTuple(_message.Message):
    __slots__ = ("key", "lattice_type", "error", "payload", "address_cache_size", "invalidate")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LATTICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INVALIDATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    lattice_type: LatticeType
    error: AnnaError
    payload: bytes
    address_cache_size: int
    invalidate: bool
    def __init__(self, key: _Optional[str] = ..., lattice_type: _Optional[_Union[LatticeType, str]] = ..., error: _Optional[_Union[AnnaError, str]] = ..., payload: _Optional[bytes] = ..., address_cache_size: _Optional[int] = ..., invalidate: _Optional[bool] = ...) -> None: ...

class KeyRequest(_message.Message):
    __slots__ = ("type", "tuples", "response_address", "request_id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    tuples: _containers.RepeatedCompositeFieldContainer[KeyTuple]
    response_address: str
    request_id: str
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., tuples: _Optional[_Iterable[_Union[KeyTuple, _Mapping]]] = ..., response_address: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class KeyResponse(_message.Message):
    __slots__ = ("type", "tuples", "response_id", "error")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    type: RequestType
    tuples: _containers.RepeatedCompositeFieldContainer[KeyTuple]
    response_id: str
    error: AnnaError
    def __init__(self, type: _Optional[_Union[RequestType, str]] = ..., tuples: _Optional[_Iterable[_Union[KeyTuple, _Mapping]]] = ..., response_id: _Optional[str] = ..., error: _Optional[_Union[AnnaError, str]] = ...) -> None: ...

class KeyAddressRequest(_message.Message):
    __slots__ = ("response_address", "keys", "request_id")
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    response_address: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, response_address: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class KeyAddressResponse(_message.Message):
    __slots__ = ("addresses", "error", "response_id")
    class KeyAddress(_message.Message):
        __slots__ = ("key", "ips")
        KEY_FIELD_NUMBER: _ClassVar[int]
        IPS_FIELD_NUMBER: _ClassVar[int]
        key: str
        ips: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, key: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ...) -> None: ...
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedCompositeFieldContainer[KeyAddressResponse.KeyAddress]
    error: AnnaError
    response_id: str
    def __init__(self, addresses: _Optional[_Iterable[_Union[KeyAddressResponse.KeyAddress, _Mapping]]] = ..., error: _Optional[_Union[AnnaError, str]] = ..., response_id: _Optional[str] = ...) -> None: ...

class LWWValue(_message.Message):
    __slots__ = ("timestamp", "value")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    value: bytes
    def __init__(self, timestamp: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class SetValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("key", "vector_clock")
    class VectorClockEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    key: str
    vector_clock: _containers.ScalarMap[str, int]
    def __init__(self, key: _Optional[str] = ..., vector_clock: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SingleKeyCausalValue(_message.Message):
    __slots__ = ("vector_clock", "values")
    class VectorClockEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    vector_clock: _containers.ScalarMap[str, int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, vector_clock: _Optional[_Mapping[str, int]] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class MultiKeyCausalValue(_message.Message):
    __slots__ = ("vector_clock", "dependencies", "values")
    class VectorClockEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VECTOR_CLOCK_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    vector_clock: _containers.ScalarMap[str, int]
    dependencies: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, vector_clock: _Optional[_Mapping[str, int]] = ..., dependencies: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PriorityValue(_message.Message):
    __slots__ = ("priority", "value")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    priority: float
    value: bytes
    def __init__(self, priority: _Optional[float] = ..., value: _Optional[bytes] = ...) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ("deleted_at_ms", "lattice_type", "payload")
    DELETED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LATTICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    deleted_at_ms: int
    lattice_type: LatticeType
    payload: bytes
    def __init__(self, deleted_at_ms: _Optional[int] = ..., lattice_type: _Optional[_Union[LatticeType, str]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class CacheSubscription(_message.Message):
    __slots__ = ("cache_address", "keys", "unsubscribe")
    CACHE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    cache_address: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    unsubscribe: bool
    def __init__(self, cache_address: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., unsubscribe: _Optional[bool] = ...) -> None: ...

class StorageNode(_message.Message):
    __slots__ = ("node_id", "epoch", "departed", "shard_addresses", "gossip_addresses", "routing_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DEPARTED_FIELD_NUMBER: _ClassVar[int]
    SHARD_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ROUTING_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    departed: bool
    shard_addresses: _containers.RepeatedScalarFieldContainer[str]
    gossip_addresses: _containers.RepeatedScalarFieldContainer[str]
    routing_address: str
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., departed: _Optional[bool] = ..., shard_addresses: _Optional[_Iterable[str]] = ..., gossip_addresses: _Optional[_Iterable[str]] = ..., routing_address: _Optional[str] = ...) -> None: ...

class ReplicationFactor(_message.Message):
    __slots__ = ("key", "global_replication", "local_replication", "timestamp")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_REPLICATION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    key: str
    global_replication: int
    local_replication: int
    timestamp: int
    def __init__(self, key: _Optional[str] = ..., global_replication: _Optional[int] = ..., local_replication: _Optional[int] = ..., timestamp: _Optional[int] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("nodes", "replication", "routing_addresses")
    NODES_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    ROUTING_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[StorageNode]
    replication: _containers.RepeatedCompositeFieldContainer[ReplicationFactor]
    routing_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nodes: _Optional[_Iterable[_Union[StorageNode, _Mapping]]] = ..., replication: _Optional[_Iterable[_Union[ReplicationFactor, _Mapping]]] = ..., routing_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("node_id", "epoch", "shard", "gossip_address", "membership_digest")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_DIGEST_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    shard: int
    gossip_address: str
    membership_digest: bytes
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., shard: _Optional[int] = ..., gossip_address: _Optional[str] = ..., membership_digest: _Optional[bytes] = ...) -> None: ...

class Gossip(_message.Message):
    __slots__ = ("tuples", "sender", "written_ms")
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_MS_FIELD_NUMBER: _ClassVar[int]
    tuples: _containers.RepeatedCompositeFieldContainer[KeyTuple]
    sender: str
    written_ms: int
    def __init__(self, tuples: _Optional[_Iterable[_Union[KeyTuple, _Mapping]]] = ..., sender: _Optional[str] = ..., written_ms: _Optional[int] = ...) -> None: ...

class Depart(_message.Message):
    __slots__ = ("node_id", "epoch")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class KeyHash(_message.Message):
    __slots__ = ("key", "hash")
    KEY_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    key: str
    hash: int
    def __init__(self, key: _Optional[str] = ..., hash: _Optional[int] = ...) -> None: ...

class AntiEntropy(_message.Message):
    __slots__ = ("sender", "buckets", "digest", "bucket_ids", "keys", "want")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    BUCKET_IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    buckets: int
    digest: bytes
    bucket_ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyHash]
    want: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sender: _Optional[str] = ..., buckets: _Optional[int] = ..., digest: _Optional[bytes] = ..., bucket_ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[_Union[KeyHash, _Mapping]]] = ..., want: _Optional[_Iterable[str]] = ...) -> None: ...
