from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitRequest(_message.Message):
    __slots__ = ("manifest", "source", "executor", "priority", "replace", "git_json")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    GIT_JSON_FIELD_NUMBER: _ClassVar[int]
    manifest: str
    source: str
    executor: str
    priority: int
    replace: bool
    git_json: str
    def __init__(self, manifest: _Optional[str] = ..., source: _Optional[str] = ..., executor: _Optional[str] = ..., priority: _Optional[int] = ..., replace: _Optional[bool] = ..., git_json: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "name", "state", "executor", "priority", "submitted", "started", "finished", "position", "waiting", "trials", "slots", "attempt", "reason", "message", "handle")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    state: str
    executor: str
    priority: int
    submitted: float
    started: float
    finished: float
    position: int
    waiting: str
    trials: int
    slots: int
    attempt: int
    reason: str
    message: str
    handle: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., executor: _Optional[str] = ..., priority: _Optional[int] = ..., submitted: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., position: _Optional[int] = ..., waiting: _Optional[str] = ..., trials: _Optional[int] = ..., slots: _Optional[int] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., handle: _Optional[str] = ...) -> None: ...

class QueueRequest(_message.Message):
    __slots__ = ("all", "name")
    ALL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    all: bool
    name: str
    def __init__(self, all: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class QueueReply(_message.Message):
    __slots__ = ("entries", "running_slots", "max_slots")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_SLOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_SLOTS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    running_slots: int
    max_slots: int
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., running_slots: _Optional[int] = ..., max_slots: _Optional[int] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TrialProgress(_message.Message):
    __slots__ = ("name", "phase", "stage", "progress", "parameters", "accuracy_emulated")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_EMULATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    phase: str
    stage: str
    progress: str
    parameters: str
    accuracy_emulated: float
    def __init__(self, name: _Optional[str] = ..., phase: _Optional[str] = ..., stage: _Optional[str] = ..., progress: _Optional[str] = ..., parameters: _Optional[str] = ..., accuracy_emulated: _Optional[float] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("entry", "trials")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    trials: _containers.RepeatedCompositeFieldContainer[TrialProgress]
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[TrialProgress, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("name", "trial", "stage", "follow", "tail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    trial: str
    stage: str
    follow: bool
    tail: int
    def __init__(self, name: _Optional[str] = ..., trial: _Optional[str] = ..., stage: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("path", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ResourcesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pool(_message.Message):
    __slots__ = ("executor", "name", "cpus", "cpus_free", "memory_bytes", "memory_free_bytes", "gpus", "gpus_free", "note")
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    CPUS_FREE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FREE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    executor: str
    name: str
    cpus: float
    cpus_free: float
    memory_bytes: int
    memory_free_bytes: int
    gpus: int
    gpus_free: int
    note: str
    def __init__(self, executor: _Optional[str] = ..., name: _Optional[str] = ..., cpus: _Optional[float] = ..., cpus_free: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., gpus: _Optional[int] = ..., gpus_free: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ResourcesReply(_message.Message):
    __slots__ = ("pools", "slots_used", "slot_limits", "max_slots")
    class SlotsUsedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SlotLimitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    POOLS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_USED_FIELD_NUMBER: _ClassVar[int]
    SLOT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_SLOTS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    slots_used: _containers.ScalarMap[str, int]
    slot_limits: _containers.ScalarMap[str, int]
    max_slots: int
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ..., slots_used: _Optional[_Mapping[str, int]] = ..., slot_limits: _Optional[_Mapping[str, int]] = ..., max_slots: _Optional[int] = ...) -> None: ...
