"""types: the plain Python values results come back as."""

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass(frozen=True)
class KeyValue:
    """A key as stored."""
    key: bytes
    value: bytes
    create_revision: int  # revision of the write that created it
    mod_revision: int     # revision of its last change
    version: int          # changes since created (1 after the first put)
    lease: int            # the lease it is attached to (0: none)


@dataclass(frozen=True)
class RangeResult:
    """What Client.range found. Iterating over it gives the KeyValues."""
    kvs: List[KeyValue]
    revision: int  # the store's revision it was served at
    more: bool     # keys were left out (limit, or the 4 MiB reply bound)
    count: int     # keys in the whole range, limit or not

    def __iter__(self):
        return iter(self.kvs)

    def __len__(self):
        return len(self.kvs)


@dataclass(frozen=True)
class PutResult:
    revision: int                       # the revision the put made
    prev_kv: Optional[KeyValue] = None  # with prev_kv=True: the key before


@dataclass(frozen=True)
class DeleteResult:
    revision: int  # the revision it made (the store's if nothing deleted)
    deleted: int   # keys deleted
    prev_kvs: List[KeyValue] = field(default_factory=list)
    more: bool = False  # with a limit: keys of the range are left


@dataclass(frozen=True)
class TxnResult:
    """What a transaction did: succeeded says whether the compares held
    (the THEN branch ran); responses has one result per op of the branch
    that ran (RangeResult, PutResult, DeleteResult or TxnResult)."""
    succeeded: bool
    revision: int
    responses: list


@dataclass(frozen=True)
class Event:
    """A change to a key. type is "put" or "delete"; a delete's kv has the
    key and mod_revision only. prev_kv (watches with prev_kv=True) is the
    key before the change, None when it did not exist or when that version
    was compacted away (prev_kv_compacted)."""
    type: str
    kv: KeyValue
    prev_kv: Optional[KeyValue] = None
    prev_kv_compacted: bool = False


@dataclass(frozen=True)
class Events:
    """A batch of changes (Client.events, Watch.get): oldest first; every
    change up to revision has been delivered."""
    events: List[Event]
    revision: int
    compact_revision: int
    more: bool = False
    next_revision: int = 0

    def __iter__(self):
        return iter(self.events)

    def __len__(self):
        return len(self.events)


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int  # the TTL it was granted with (seconds)


@dataclass(frozen=True)
class LeaseRevoked:
    revision: int  # the revision that deleted its keys
    deleted: int   # keys deleted


@dataclass(frozen=True)
class LeaseTTL:
    id: int
    ttl: int          # whole seconds left, by the leader's clock
    granted_ttl: int  # the TTL it was granted with
    revision: int     # the store's revision
    keys: List[bytes] = field(default_factory=list)  # with keys=True


@dataclass(frozen=True)
class NodeStatus:
    """One server's view (Client.status); see struct clerk_node_status."""
    address: str
    reachable: bool
    id: int
    role: str
    term: int
    leader: int
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    disk_full: bool
    error: str
    applied_lag: Optional[int]  # None: not known
    match_index: Optional[int]  # None: the leader did not report it
    replication_lag: Optional[int]
    ack_age_ms: Optional[int]
    other_cluster: bool = False  # it answers for another cluster: no member


@dataclass(frozen=True)
class Member:
    id: int
    learner: bool
    peer_address: str
    address: str


@dataclass(frozen=True)
class Members:
    members: List[Member]
    committed: bool
    leader_id: int
    cluster_id: int
    removed: List[int]
