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
    __slots__ = ("key", "deserialize")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESERIALIZE_FIELD_NUMBER: _ClassVar[int]
    key: str
    deserialize: bool
    def __init__(self, key: _Optional[str] = ..., deserialize: _Optional[bool] = ...) -> None: ...

class Argument(_message.Message):
    __slots__ = ("value", "reference")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    value: Value
    reference: Reference
    def __init__(self, value: _Optional[_Union[Value, _Mapping]] = ..., reference: _Optional[_Union[Reference, _Mapping]] = ...) -> None: ...

class Arguments(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Argument]
    def __init__(self, values: _Optional[_Iterable[_Union[Argument, _Mapping]]] = ...) -> None: ...

class RemoteError(_message.Message):
    __slots__ = ("error", "exc_type", "message", "traceback", "pickled")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXC_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    PICKLED_FIELD_NUMBER: _ClassVar[int]
    error: CloudburstError
    exc_type: str
    message: str
    traceback: str
    pickled: bytes
    def __init__(self, error: _Optional[_Union[CloudburstError, str]] = ..., exc_type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., pickled: _Optional[bytes] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "body")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    name: str
    body: bytes
    def __init__(self, name: _Optional[str] = ..., body: _Optional[bytes] = ...) -> None: ...

class FunctionList(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class Dag(_message.Message):
    __slots__ = ("name", "functions", "connections")
    class Link(_message.Message):
        __slots__ = ("source", "sink")
        SOURCE_FIELD_NUMBER: _ClassVar[int]
        SINK_FIELD_NUMBER: _ClassVar[int]
        source: str
        sink: str
        def __init__(self, source: _Optional[str] = ..., sink: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    functions: _containers.RepeatedScalarFieldContainer[str]
    connections: _containers.RepeatedCompositeFieldContainer[Dag.Link]
    def __init__(self, name: _Optional[str] = ..., functions: _Optional[_Iterable[str]] = ..., connections: _Optional[_Iterable[_Union[Dag.Link, _Mapping]]] = ...) -> None: ...

class FunctionCall(_message.Message):
    __slots__ = ("name", "request_id", "arguments", "response_key", "response_address", "consistency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_KEY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    arguments: Arguments
    response_key: str
    response_address: str
    consistency: ConsistencyType
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., response_key: _Optional[str] = ..., response_address: _Optional[str] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ...) -> None: ...

class DagCall(_message.Message):
    __slots__ = ("name", "function_args", "consistency", "response_address", "output_key", "client_id", "request_id")
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
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    function_args: _containers.MessageMap[str, Arguments]
    consistency: ConsistencyType
    response_address: str
    output_key: str
    client_id: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., function_args: _Optional[_Mapping[str, Arguments]] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ..., response_address: _Optional[str] = ..., output_key: _Optional[str] = ..., client_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DagSchedule(_message.Message):
    __slots__ = ("id", "dag", "locations", "arguments", "response_address", "output_key", "consistency", "client_id", "start_time")
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
    ID_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    dag: Dag
    locations: _containers.ScalarMap[str, str]
    arguments: _containers.MessageMap[str, Arguments]
    response_address: str
    output_key: str
    consistency: ConsistencyType
    client_id: str
    start_time: float
    def __init__(self, id: _Optional[str] = ..., dag: _Optional[_Union[Dag, _Mapping]] = ..., locations: _Optional[_Mapping[str, str]] = ..., arguments: _Optional[_Mapping[str, Arguments]] = ..., response_address: _Optional[str] = ..., output_key: _Optional[str] = ..., consistency: _Optional[_Union[ConsistencyType, str]] = ..., client_id: _Optional[str] = ..., start_time: _Optional[float] = ...) -> None: ...

class DagTrigger(_message.Message):
    __slots__ = ("id", "source", "target_function", "arguments", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    target_function: str
    arguments: Arguments
    error: RemoteError
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., target_function: _Optional[str] = ..., arguments: _Optional[_Union[Arguments, _Mapping]] = ..., error: _Optional[_Union[RemoteError, _Mapping]] = ...) -> None: ...

class GenericResponse(_message.Message):
    __slots__ = ("success", "error", "response_id", "message", "payload")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error: CloudburstError
    response_id: str
    message: str
    payload: bytes
    def __init__(self, success: _Optional[bool] = ..., error: _Optional[_Union[CloudburstError, str]] = ..., response_id: _Optional[str] = ..., message: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class CallResult(_message.Message):
    __slots__ = ("response_id", "success", "value", "error")
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response_id: str
    success: bool
    value: Value
    error: RemoteError
    def __init__(self, response_id: _Optional[str] = ..., success: _Optional[bool] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., error: _Optional[_Union[RemoteError, _Mapping]] = ...) -> None: ...
