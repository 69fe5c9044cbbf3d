import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[PublishPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[PublishPoint, _Mapping]]] = ...) -> None: ...

class PublishPoint(_message.Message):
    __slots__ = ("series", "timestamp", "value")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series: str
    timestamp: _timestamp_pb2.Timestamp
    value: float
    def __init__(self, series: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected_out_of_order")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_OUT_OF_ORDER_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected_out_of_order: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected_out_of_order: _Optional[int] = ...) -> None: ...
