from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CloudburstError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NO_ERROR: _ClassVar[CloudburstError]
    FUNC_NOT_FOUND: _ClassVar[CloudburstError]
    NOT_PINNED: _ClassVar[CloudburstError]
    EXECUTION_ERROR: _ClassVar[CloudburstError]
    NO_SUCH_DAG: _ClassVar[CloudburstError]
    NO_RESOURCES: _ClassVar[CloudburstError]
    DAG_ALREADY_EXISTS: _ClassVar[CloudburstError]
    INVALID_ARGUMENT: _ClassVar[CloudburstError]
    EXECUTOR_FAILED: _ClassVar[CloudburstError]
    TIMED_OUT: _ClassVar[CloudburstError]
    INTERNAL_ERROR: _ClassVar[CloudburstError]
    FUNCTION_TIMEOUT: _ClassVar[CloudburstError]
    FUNCTION_MEMORY_EXCEEDED: _ClassVar[CloudburstError]
    CALL_CANCELLED: _ClassVar[CloudburstError]
    ARGUMENT_NOT_READY: _ClassVar[CloudburstError]

class ConsistencyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL: _ClassVar[ConsistencyType]
    SINGLE: _ClassVar[ConsistencyType]
    MULTI: _ClassVar[ConsistencyType]

class SerializerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[SerializerType]
    STRING: _ClassVar[SerializerType]
    NUMPY: _ClassVar[SerializerType]
    BYTES: _ClassVar[SerializerType]
NO_ERROR: CloudburstError
FUNC_NOT_FOUND: CloudburstError
NOT_PINNED: CloudburstError
EXECUTION_ERROR: CloudburstError
NO_SUCH_DAG: CloudburstError
NO_RESOURCES: CloudburstError
DAG_ALREADY_EXISTS: CloudburstError
INVALID_ARGUMENT: CloudburstError
EXECUTOR_FAILED: CloudburstError
TIMED_OUT: CloudburstError
INTERNAL_ERROR: CloudburstError
FUNCTION_TIMEOUT: CloudburstError
FUNCTION_MEMORY_EXCEEDED: CloudburstError
CALL_CANCELLED: CloudburstError
ARGUMENT_NOT_READY: CloudburstError
NORMAL: ConsistencyType
SINGLE: ConsistencyType
MULTI: ConsistencyType
DEFAULT: SerializerType
STRING: SerializerType
NUMPY: SerializerType
BYTES: SerializerType

class Value(_message.Message):
    __slots__ = ("body", "type")
    BODY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    type: SerializerType
    def __init__(self, body: _Optional[bytes] = ..., type: _Optional[_Union[SerializerType, str]] = ...) -> None: ...

class Reference(_message.Message):
    __slots__ = ("key", "deserialize", "wait")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESERIALIZE_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    key: str
    deserialize: bool
    wait: bool
    def __init__(self, key: _Optional[str] = ..., deserialize: _Optional[bool] = ..., wait: _Optional[bool] = ...) -> None: ...

class SharedValue(_message.Message):
    __slots__ = ("segment", "type", "offset", "length", "host")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    segment: str
    type: SerializerType
    offset: int
    length: int
    host: str
    def __init__(self, segment: _Optional[str] = ..., type: _Optional[_Union[SerializerType, str]] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., host: _Optional[str] = ...) -> None: ...

class Argument(_message.Message):
    __slots__ = ("value", "reference", "shared")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    value: Value
    reference: Reference
    shared: SharedValue
    def __init__(self, value: _Optional[_Union[Value, _Mapping]] = ..., reference: _Optional[_Union[Reference, _Mapping]] = ..., shared: _Optional[_Union[SharedValue, _Mapping]] = ...) -> None: ...

class Arguments(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Argument]
    def __init__(self, values: _Optional[_Iterable[_Union[Argument, _Mapping]]] = ...) -> None: ...

class RemoteError(_message.Message):
    __slots__ = ("error", "exc_type", "message", "traceback", "pickled", "function", "limit")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXC_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    PICKLED_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    error: CloudburstError
    exc_type: str
    message: str
    traceback: str
    pickled: bytes
    function: str
    limit: float
    def __init__(self, error: _Optional[_Union[CloudburstError, str]] = ..., exc_type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., pickled: _Optional[bytes] = ..., function: _Optional[str] = ..., limit: _Optional[float] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "body", "timeout_s", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    body: bytes
    timeout_s: float
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., body: _Optional[bytes] = ..., timeout_s: _Optional[float] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class FunctionList(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class Dag(_message.Message):
    __slots__ = ("name", "functions", "connections", "multiexec", "gpu_functions", "batching_functions", "colocated")
    class Link(_message.Message):
        __slots__ = ("source", "sink")
        SOURCE_FIELD_NUMBER: _ClassVar[int]
        SINK_FIELD_NUMBER: _ClassVar[int]
        source: str
        sink: str
        def __init__(self, source: _Optional[str] = ..., sink: _Optional[str] = ...) -> None: ...
    class Invalids(_message.Message):
        __slots__ = ("values",)
        VALUES_FIELD_NUMBER: _ClassVar[int]
        values: _containers.RepeatedCompositeFieldContainer[Value]
        def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...
    class Group(_message.Message):
        __slots__ = ("functions",)
        FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
        functions: _containers.RepeatedScalarFieldContainer[str]
        def __init__(self, functions: _Optional[_Iterable[str]] = ...) -> None: ...
    class MultiexecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Dag.Invalids
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Dag.Invalids, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MULTIEXEC_FIELD_NUMBER: _ClassVar[int]
    GPU_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    COLOCATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    functions: _containers.RepeatedScalarFieldContainer[str]
    connections: _containers.RepeatedCompositeFieldContainer[Dag.Link]
    multiexec: _containers.MessageMap[str, Dag.Invalids]
    gpu_functions: _containers.RepeatedScalarFieldContainer[str]
    batching_functions: _containers.RepeatedScalarFieldContainer[str]
    colocated: _containers.RepeatedCompositeFieldContainer[Dag.Group]
    def __init__(self, name: _Optional[str] = ..., functions: _Optional[_Iterable[str]] = ..., connections: _Optional[_Iterable[_Union[Dag.Link, _Mapping]]] = ..., multiexec: _Optional[_Mapping[str, Dag.Invalids]] = ..., gpu_functions: _Optional[_Iterable[str]] = ..., batching_functions: _Optional[_Iterable[str]] = ..., colocated: _Optional[_Iterable[_Union[Dag.Group, _Mapping]]] = ...) -> None: ...

class FunctionCall(_message.Message):
    __slots__ = ("name", "arguments", "response_key", "consistency", "exclude")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments: Arguments
    response_key: str
    consistency: ConsistencyType
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., response_key: _Optional[str] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class DagCall(_message.Message):
    __slots__ = ("name", "function_args", "consistency", "output_key", "client_id", "exclude", "client_clock", "continuation", "continued_with", "continued")
    class FunctionArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arguments
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arguments, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ARGS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CLOCK_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_WITH_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    name: str
    function_args: _containers.MessageMap[str, Arguments]
    consistency: ConsistencyType
    output_key: str
    client_id: str
    exclude: _containers.RepeatedScalarFieldContainer[str]
    client_clock: Clock
    continuation: DagCall
    continued_with: Arguments
    continued: bool
    def __init__(self, name: _Optional[str] = ..., function_args: _Optional[_Mapping[str, Arguments]] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ..., output_key: _Optional[str] = ..., client_id: _Optional[str] = ..., exclude: _Optional[_Iterable[str]] = ..., client_clock: _Optional[_Union[Clock, _Mapping]] = ..., continuation: _Optional[_Union[DagCall, _Mapping]] = ..., continued_with: _Optional[_Union[Arguments, _Mapping]] = ..., continued: _Optional[bool] = ...) -> None: ...

class DagSchedule(_message.Message):
    __slots__ = ("id", "dag", "locations", "arguments", "response_address", "output_key", "consistency", "client_id", "reply_stored", "versions", "expiring_output", "sent_at", "continuation", "client_clock")
    class LocationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ArgumentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Arguments
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Arguments, _Mapping]] = ...) -> None: ...
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_STORED_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRING_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CLOCK_FIELD_NUMBER: _ClassVar[int]
    id: str
    dag: Dag
    locations: _containers.ScalarMap[str, str]
    arguments: _containers.MessageMap[str, Arguments]
    response_address: str
    output_key: str
    consistency: ConsistencyType
    client_id: str
    reply_stored: bool
    versions: _containers.ScalarMap[str, int]
    expiring_output: bool
    sent_at: float
    continuation: DagCall
    client_clock: Clock
    def __init__(self, id: _Optional[str] = ..., dag: _Optional[_Union[Dag, _Mapping]] = ..., locations: _Optional[_Mapping[str, str]] = ..., arguments: _Optional[_Mapping[str, Arguments]] = ..., response_address: _Optional[str] = ..., output_key: _Optional[str] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ..., client_id: _Optional[str] = ..., reply_stored: _Optional[bool] = ..., versions: _Optional[_Mapping[str, int]] = ..., expiring_output: _Optional[bool] = ..., sent_at: _Optional[float] = ..., continuation: _Optional[_Union[DagCall, _Mapping]] = ..., client_clock: _Optional[_Union[Clock, _Mapping]] = ...) -> None: ...

class SessionRead(_message.Message):
    __slots__ = ("key", "location", "lattice_type", "payload", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LATTICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    location: str
    lattice_type: int
    payload: bytes
    version: str
    def __init__(self, key: _Optional[str] = ..., location: _Optional[str] = ..., lattice_type: _Optional[int] = ..., payload: _Optional[bytes] = ..., version: _Optional[str] = ...) -> None: ...

class Clock(_message.Message):
    __slots__ = ("entries",)
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[str, int]
    def __init__(self, entries: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CallSession(_message.Message):
    __slots__ = ("reads", "holders", "versions", "required")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Clock
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Clock, _Mapping]] = ...) -> None: ...
    class RequiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Clock
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Clock, _Mapping]] = ...) -> None: ...
    READS_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    reads: _containers.RepeatedCompositeFieldContainer[SessionRead]
    holders: _containers.RepeatedScalarFieldContainer[str]
    versions: _containers.MessageMap[str, Clock]
    required: _containers.MessageMap[str, Clock]
    def __init__(self, reads: _Optional[_Iterable[_Union[SessionRead, _Mapping]]] = ..., holders: _Optional[_Iterable[str]] = ..., versions: _Optional[_Mapping[str, Clock]] = ..., required: _Optional[_Mapping[str, Clock]] = ...) -> None: ...

class DagTrigger(_message.Message):
    __slots__ = ("schedule", "source", "target_function", "arguments", "error", "session")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    schedule: DagSchedule
    source: str
    target_function: str
    arguments: Arguments
    error: RemoteError
    session: CallSession
    def __init__(self, schedule: _Optional[_Union[DagSchedule, _Mapping]] = ..., source: _Optional[str] = ..., target_function: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., error: _Optional[_Union[RemoteError, _Mapping]] = ..., session: _Optional[_Union[CallSession, _Mapping]] = ...) -> None: ...

class ExecutorStatus(_message.Message):
    __slots__ = ("address", "node_id", "functions", "busy", "queue_length", "cached_key_sizes", "has_cache_summary", "pid", "inbox_address", "completed", "leaving", "index", "indexed", "current_call", "current_call_s", "control_address", "gpu", "busy_s", "uptime_s")
    class CachedKeySizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CACHED_KEY_SIZES_FIELD_NUMBER: _ClassVar[int]
    HAS_CACHE_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    INBOX_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CALL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CALL_S_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    BUSY_S_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    functions: _containers.RepeatedScalarFieldContainer[str]
    busy: int
    queue_length: int
    cached_key_sizes: _containers.ScalarMap[str, int]
    has_cache_summary: bool
    pid: int
    inbox_address: str
    completed: int
    leaving: bool
    index: int
    indexed: bool
    current_call: str
    current_call_s: float
    control_address: str
    gpu: bool
    busy_s: float
    uptime_s: float
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., functions: _Optional[_Iterable[str]] = ..., busy: _Optional[int] = ..., queue_length: _Optional[int] = ..., cached_key_sizes: _Optional[_Mapping[str, int]] = ..., has_cache_summary: _Optional[bool] = ..., pid: _Optional[int] = ..., inbox_address: _Optional[str] = ..., completed: _Optional[int] = ..., leaving: _Optional[bool] = ..., index: _Optional[int] = ..., indexed: _Optional[bool] = ..., current_call: _Optional[str] = ..., current_call_s: _Optional[float] = ..., control_address: _Optional[str] = ..., gpu: _Optional[bool] = ..., busy_s: _Optional[float] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class CallCancel(_message.Message):
    __slots__ = ("call_id", "addresses")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, call_id: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class StatusQuery(_message.Message):
    __slots__ = ("addresses", "client_version")
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    client_version: str
    def __init__(self, addresses: _Optional[_Iterable[str]] = ..., client_version: _Optional[str] = ...) -> None: ...

class ExecutorInfo(_message.Message):
    __slots__ = ("address", "node_id", "alive", "functions", "pid", "load", "busy", "queue_length", "current_call", "current_call_s", "gpu", "busy_s", "uptime_s")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CALL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CALL_S_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    BUSY_S_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    alive: bool
    functions: _containers.RepeatedScalarFieldContainer[str]
    pid: int
    load: int
    busy: int
    queue_length: int
    current_call: str
    current_call_s: float
    gpu: bool
    busy_s: float
    uptime_s: float
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., alive: _Optional[bool] = ..., functions: _Optional[_Iterable[str]] = ..., pid: _Optional[int] = ..., load: _Optional[int] = ..., busy: _Optional[int] = ..., queue_length: _Optional[int] = ..., current_call: _Optional[str] = ..., current_call_s: _Optional[float] = ..., gpu: _Optional[bool] = ..., busy_s: _Optional[float] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("executors", "kvs_address", "scheduler_address", "dead", "functions", "dags", "server_version", "function_replicas")
    class FunctionReplicasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    KVS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    DAGS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    executors: _containers.RepeatedCompositeFieldContainer[ExecutorInfo]
    kvs_address: str
    scheduler_address: str
    dead: _containers.RepeatedScalarFieldContainer[str]
    functions: int
    dags: int
    server_version: str
    function_replicas: _containers.ScalarMap[str, int]
    def __init__(self, executors: _Optional[_Iterable[_Union[ExecutorInfo, _Mapping]]] = ..., kvs_address: _Optional[str] = ..., scheduler_address: _Optional[str] = ..., dead: _Optional[_Iterable[str]] = ..., functions: _Optional[int] = ..., dags: _Optional[int] = ..., server_version: _Optional[str] = ..., function_replicas: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SchedulerRequest(_message.Message):
    __slots__ = ("request_id", "response_address", "register_function", "get_function", "list_functions", "register_dag", "delete_dag", "call", "dag_call", "status", "heartbeat", "delete_function", "cancel", "replicate")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    GET_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    LIST_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_DAG_FIELD_NUMBER: _ClassVar[int]
    DELETE_DAG_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    DAG_CALL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    response_address: str
    register_function: Function
    get_function: str
    list_functions: str
    register_dag: Dag
    delete_dag: str
    call: FunctionCall
    dag_call: DagCall
    status: StatusQuery
    heartbeat: ExecutorStatus
    delete_function: str
    cancel: CallCancel
    replicate: FunctionReplication
    def __init__(self, request_id: _Optional[str] = ..., response_address: _Optional[str] = ..., register_function: _Optional[_Union[Function, _Mapping]] = ..., get_function: _Optional[str] = ..., list_functions: _Optional[str] = ..., register_dag: _Optional[_Union[Dag, _Mapping]] = ..., delete_dag: _Optional[str] = ..., call: _Optional[_Union[FunctionCall, _Mapping]] = ..., dag_call: _Optional[_Union[DagCall, _Mapping]] = ..., status: _Optional[_Union[StatusQuery, _Mapping]] = ..., heartbeat: _Optional[_Union[ExecutorStatus, _Mapping]] = ..., delete_function: _Optional[str] = ..., cancel: _Optional[_Union[CallCancel, _Mapping]] = ..., replicate: _Optional[_Union[FunctionReplication, _Mapping]] = ...) -> None: ...

class FunctionReplication(_message.Message):
    __slots__ = ("function", "replicas")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    function: str
    replicas: int
    def __init__(self, function: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class GenericResponse(_message.Message):
    __slots__ = ("success", "error", "response_id", "message", "payload", "schedule", "names")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: CloudburstError
    response_id: str
    message: str
    payload: bytes
    schedule: DagSchedule
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[_Union[CloudburstError, str]] = ..., response_id: _Optional[str] = ..., message: _Optional[str] = ..., payload: _Optional[bytes] = ..., schedule: _Optional[_Union[DagSchedule, _Mapping]] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class CallResult(_message.Message):
    __slots__ = ("response_id", "success", "value", "error", "executor", "output", "clock")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    success: bool
    value: Value
    error: RemoteError
    executor: str
    output: str
    clock: Clock
    def __init__(self, response_id: _Optional[str] = ..., success: _Optional[bool] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., error: _Optional[_Union[RemoteError, _Mapping]] = ..., executor: _Optional[str] = ..., output: _Optional[str] = ..., clock: _Optional[_Union[Clock, _Mapping]] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("response_id", "response", "result", "status")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    response: GenericResponse
    result: CallResult
    status: ClusterStatus
    def __init__(self, response_id: _Optional[str] = ..., response: _Optional[_Union[GenericResponse, _Mapping]] = ..., result: _Optional[_Union[CallResult, _Mapping]] = ..., status: _Optional[_Union[ClusterStatus, _Mapping]] = ...) -> None: ...

class ExecutorMessage(_message.Message):
    __slots__ = ("trigger", "cancel")
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    trigger: DagTrigger
    cancel: CallCancel
    def __init__(self, trigger: _Optional[_Union[DagTrigger, _Mapping]] = ..., cancel: _Optional[_Union[CallCancel, _Mapping]] = ...) -> None: ...
