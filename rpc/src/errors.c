/* errors.c: rpc error names and the per-thread status of the last call. */
#include <stdio.h>
#include <string.h>

#include "rpc/rpc.h"
#include "internal.h"

static _Thread_local int last_status;
static _Thread_local char last_error[700];

const char *rpc_strerror(int err)
{
    switch (err) {
        case RPC_OK:
            return "ok";
        case RPC_E_UNKNOWN_SERVICE:
            return "unknown service";
        case RPC_E_UNKNOWN_METHOD:
            return "unknown method";
        case RPC_E_BAD_REQUEST:
            return "bad request";
        case RPC_E_SHUTTING_DOWN:
            return "server shutting down";
        case RPC_E_INTERNAL:
            return "internal server error";
        case RPC_E_OVERLOADED:
            return "overloaded";
        case RPC_E_WRONG_CLUSTER:
            return "the server is of another cluster";
        case RPC_E_DEADLINE_EXCEEDED:
            return "deadline exceeded before the server started the call";
        case RPC_E_TIMEOUT:
            return "timed out";
        case RPC_E_UNAVAILABLE:
            return "server unavailable";
        case RPC_E_CONNECTION_LOST:
            return "connection lost";
        case RPC_E_CANCELLED:
            return "cancelled";
        case RPC_E_TOO_BIG:
            return "message too big";
        case RPC_E_BAD_REPLY:
            return "malformed reply";
        case RPC_E_NOMEM:
            return "out of memory";
        case RPC_E_INVALID:
            return "invalid argument";
        case RPC_E_IO:
            return "I/O error";
        default:
            return "unknown error";
    }
}

int rpc_last_status(void)
{
    return last_status;
}

const char *rpc_last_error(void)
{
    return last_error;
}

void rpc_set_last(int status, const char *msg)
{
    last_status = status;
    if (!msg || !*msg) {
        msg = status ? rpc_strerror(status) : "";
    }
    snprintf(last_error, sizeof last_error, "%s", msg);
}

int rpc_status_from_wire(int wire)
{
    if (wire > 0 && wire < 100) {
        return wire;
    }
    return RPC_E_INTERNAL;
}
