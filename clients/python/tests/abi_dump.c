/* abi_dump: clerk.h's struct layouts and constants, one per line, for
 * test_abi.py to check the ctypes mirror in raftkv/_lib.py against. */
#include <stddef.h>
#include <stdio.h>

#include <clerk/clerk.h>

#define SIZE(s)     printf("size %s %zu\n", #s, sizeof(struct s))
#define FIELD(s, f) printf("field %s.%s %zu\n", #s, #f, offsetof(struct s, f))
#define CONST(c)    printf("const %s %lld\n", #c, (long long)(c))

int main(void)
{
    SIZE(clerk_options);
    FIELD(clerk_options, read_mode);
    FIELD(clerk_options, user);
    FIELD(clerk_options, key);
    SIZE(clerk_node_status);
    FIELD(clerk_node_status, reachable);
    FIELD(clerk_node_status, other_cluster);
    FIELD(clerk_node_status, id);
    FIELD(clerk_node_status, role);
    FIELD(clerk_node_status, term);
    FIELD(clerk_node_status, snapshot_index);
    FIELD(clerk_node_status, disk_full);
    FIELD(clerk_node_status, error);
    FIELD(clerk_node_status, lag_known);
    FIELD(clerk_node_status, applied_lag);
    FIELD(clerk_node_status, progress_known);
    FIELD(clerk_node_status, ack_age_ms);
    SIZE(clerk_member);
    FIELD(clerk_member, learner);
    FIELD(clerk_member, peer_address);
    FIELD(clerk_member, address);
    SIZE(clerk_members);
    FIELD(clerk_members, committed);
    FIELD(clerk_members, leader_id);
    FIELD(clerk_members, removed);
    FIELD(clerk_members, n_removed);
    SIZE(clerk_kv);
    FIELD(clerk_kv, value);
    FIELD(clerk_kv, create_revision);
    FIELD(clerk_kv, lease);
    SIZE(clerk_range_result);
    FIELD(clerk_range_result, kvs);
    FIELD(clerk_range_result, more);
    FIELD(clerk_range_result, count);
    SIZE(clerk_put_result);
    FIELD(clerk_put_result, prev_kv);
    SIZE(clerk_delete_result);
    FIELD(clerk_delete_result, deleted);
    FIELD(clerk_delete_result, n_prev_kvs);
    FIELD(clerk_delete_result, more);
    SIZE(clerk_txn_response);
    FIELD(clerk_txn_response, range);
    FIELD(clerk_txn_response, txn);
    SIZE(clerk_txn_result);
    FIELD(clerk_txn_result, succeeded);
    FIELD(clerk_txn_result, responses);
    FIELD(clerk_txn_result, n_responses);
    SIZE(clerk_event);
    FIELD(clerk_event, kv);
    SIZE(clerk_prev_kv);
    FIELD(clerk_prev_kv, missing);
    FIELD(clerk_prev_kv, kv);
    SIZE(clerk_events_result);
    FIELD(clerk_events_result, compact_revision);
    FIELD(clerk_events_result, events);
    FIELD(clerk_events_result, more);
    FIELD(clerk_events_result, next_revision);
    FIELD(clerk_events_result, prev_kvs);
    SIZE(clerk_watch_options);
    FIELD(clerk_watch_options, no_put);
    FIELD(clerk_watch_options, require_leader);
    FIELD(clerk_watch_options, progress_ms);
    FIELD(clerk_watch_options, prev_kv);
    SIZE(clerk_lease_ttl_result);
    FIELD(clerk_lease_ttl_result, ttl);
    FIELD(clerk_lease_ttl_result, revision);
    FIELD(clerk_lease_ttl_result, keys);
    FIELD(clerk_lease_ttl_result, n_keys);

    CONST(CLERK_OK);
    CONST(CLERK_NOT_FOUND);
    CONST(CLERK_CAS_MISMATCH);
    CONST(CLERK_UNKNOWN_OUTCOME);
    CONST(CLERK_UNAVAILABLE);
    CONST(CLERK_TIMEOUT);
    CONST(CLERK_BAD_REQUEST);
    CONST(CLERK_VALUE_TOO_LARGE);
    CONST(CLERK_NO_SPACE);
    CONST(CLERK_INVALID);
    CONST(CLERK_NOMEM);
    CONST(CLERK_INTERNAL);
    CONST(CLERK_DISABLED);
    CONST(CLERK_SESSION_EXPIRED);
    CONST(CLERK_UNAUTHENTICATED);
    CONST(CLERK_PERMISSION_DENIED);
    CONST(CLERK_COMPACTED);
    CONST(CLERK_FUTURE_REVISION);
    CONST(CLERK_LEASE_NOT_FOUND);
    CONST(CLERK_NOT_HELD);
    CONST(CLERK_CLOSED);
    CONST(CLERK_TOO_MANY_KEYS);
    CONST(CLERK_READ_STALE);
    CONST(CLERK_RANGE_KEYS_ONLY);
    CONST(CLERK_RANGE_COUNT_ONLY);
    CONST(CLERK_RANGE_SORT_DESCEND);
    CONST(CLERK_PUT_PREV_KV);
    CONST(CLERK_PUT_IGNORE_VALUE);
    CONST(CLERK_DELETE_PREV_KV);
    CONST(CLERK_CMP_EQUAL);
    CONST(CLERK_CMP_GREATER);
    CONST(CLERK_CMP_LESS);
    CONST(CLERK_CMP_NOT_EQUAL);
    CONST(CLERK_TXN_THEN);
    CONST(CLERK_TXN_ELSE);
    CONST(CLERK_OP_RANGE);
    CONST(CLERK_OP_PUT);
    CONST(CLERK_OP_DELETE);
    CONST(CLERK_OP_TXN);
    CONST(CLERK_EVENT_PUT);
    CONST(CLERK_EVENT_DELETE);
    return 0;
}
