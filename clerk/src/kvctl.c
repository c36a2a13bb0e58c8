/* kvctl: the raftkv command line, on top of libclerk. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clerk/clerk.h"
#include "internal.h"
#include "kvctl_parse.h"
#include "raftkv_version.h"

/* Exit codes of one-shot commands. */
enum {
    EXIT_OK = 0,
    EXIT_NOT_FOUND = 1,       /* get, del: no such key */
    EXIT_USAGE = 2,           /* bad command line */
    EXIT_UNAVAILABLE = 3,     /* no leader, timeout, or unknown outcome */
    EXIT_CAS = 4,             /* cas: the key did not hold the expected value */
    EXIT_ERROR = 5,           /* refused: bad request, too large, disk full */
    EXIT_UNAUTHENTICATED = 6, /* no user, a wrong password, a stale token */
    EXIT_PERMISSION_DENIED = 7, /* the user's roles do not allow it */
    EXIT_COMPACTED = 8,         /* events, compact: that history is gone */
    EXIT_LEASE_NOT_FOUND = 9,   /* lease, put --lease: no such lease */
    EXIT_NOT_HELD = 10,         /* lock, elect: the lock or leadership was
                                   lost (its lease could not be kept) */
    EXIT_IO = 11, /* a local file could not be read or written (put --file,
                     put -, snapshot save): checked before the cluster is
                     asked where possible */
};

enum format { FMT_SIMPLE, FMT_JSON, FMT_TABLE };

#define MAX_TOKENS 24 /* words of one command */

static const char usage_text[] =
    "usage: kvctl [--cluster HOST:PORT,...] [-w simple|json|table]\n"
    "             [--timeout SECONDS] [--stale] [--user NAME[:PASSWORD]]\n"
    "             [--password-file FILE] [COMMAND ARGS...]\n"
    "\n"
    "Commands:\n"
    "  get KEY                 print the value of KEY\n"
    "  get KEY [END] [--prefix|--from-key] [--limit N] [--keys-only]\n"
    "      [--count-only] [--rev-info] [--sort-order ascend|descend]\n"
    "      [--print-value-only]  keys and values of a range\n"
    "  put KEY VALUE|-|--file F [--prev-kv] [--ignore-value] [--lease ID]\n"
    "                          set KEY to VALUE (-: standard input; F: a\n"
    "                          file's bytes)\n"
    "  append KEY VALUE        append VALUE to KEY (absent counts as empty)\n"
    "  del KEY                 delete KEY\n"
    "  del KEY [END] [--prefix|--from-key] [--prev-kv]  delete a range\n"
    "                          (more keys than the leader deletes in one\n"
    "                          write: in pieces, each its own revision)\n"
    "  txn [-i] [--json-input] a transaction read from standard input\n"
    "  compact REV             drop the history up to revision REV\n"
    "  events [KEY [END]] [--prefix|--from-key] --rev N [--limit N]\n"
    "                          the changes since revision N (history)\n"
    "  watch KEY [END] [--prefix|--from-key] [--rev N] [--count N]\n"
    "        [--prev-kv]       print changes as they happen, one line each\n"
    "  cas KEY EXPECTED NEW    set KEY to NEW if it holds EXPECTED\n"
    "  cas --absent KEY NEW    set KEY to NEW if it does not exist\n"
    "  lease grant TTL | revoke ID | keep-alive ID [--once] |\n"
    "        timetolive ID [--keys] | list\n"
    "                          leases: keys that go when the lease ends\n"
    "  lock NAME [-- COMMAND]  take a lock (fencing token); run COMMAND\n"
    "                          holding it, or hold it until interrupted\n"
    "  elect NAME [PROPOSAL]   campaign and lead until interrupted, or\n"
    "                          print the leader's proposal as it changes\n"
    "  status                  a row per node: role, term, indexes, leader,\n"
    "                          how far it trails the leader\n"
    "  transfer-leader ID      hand leadership to node ID (auto: the leader\n"
    "                          picks its most up-to-date follower)\n"
    "  member list | add ID PEER_ADDR ADDR | promote ID | remove ID |\n"
    "         update ID PEER_ADDR ADDR\n"
    "                          the cluster's members: grow, shrink, replace\n"
    "  snapshot save FILE|-    save a consistent copy of the whole state\n"
    "                          (-: to standard output; restore: kvserver\n"
    "                          --restore FILE)\n"
    "  fault NODE ...          inject network faults (test clusters only)\n"
    "  partition IDS IDS...    cut the cluster into groups (test clusters)\n"
    "  heal                    remove every injected fault\n"
    "  user add|delete|passwd|get|list|grant-role|revoke-role ...\n"
    "                          users (docs/auth.md)\n"
    "  role add|delete|get|list|grant-permission|revoke-permission ...\n"
    "                          roles and their key permissions\n"
    "  auth enable|disable|status\n"
    "                          turn users and permissions on or off\n"
    "  help [COMMAND]          this text, or one command's\n"
    "\n"
    "Options:\n"
    "  --cluster LIST   the servers (default: $RAFTKV_CLUSTER)\n"
    "  -w FORMAT        simple (default), json (one object per answer) or\n"
    "                   table (status as aligned columns)\n"
    "  --timeout SECS   give up after this long, retries included (default "
    "5)\n"
    "  --stale          serve gets from any node, without a leader round\n"
    "  --user NAME[:PASSWORD]  authenticate as NAME (default:\n"
    "                   $RAFTKV_USER). Without :PASSWORD, the password is\n"
    "                   read from --password-file, else $RAFTKV_PASSWORD,\n"
    "                   else asked for (without echo) when standard input\n"
    "                   is a terminal\n"
    "  --password-file FILE  the password of --user: the file's first line\n"
    "  --cacert FILE    talk TLS, trusting servers signed by this CA (PEM;\n"
    "                   default: $RAFTKV_CACERT)\n"
    "  --cert FILE      a client certificate to show (PEM; its CN is the\n"
    "                   user; default: $RAFTKV_CERT) ...\n"
    "  --key FILE       ... and its key (default: $RAFTKV_KEY)\n"
    "  --version        print kvctl's version and exit\n"
    "Options may also come after the command (kvctl get KEY --stale); the\n"
    "word -- ends the options (kvctl put -- -KEY- -VALUE-).\n"
    "\n"
    "With no COMMAND, kvctl reads one command per line from standard input\n"
    "and answers each with exactly one line on standard output (an answer\n"
    "of several rows has them joined by ' | '; help is one quoted string),\n"
    "keeping its connections and client id; on a terminal it prompts\n"
    "(kvctl> , on standard error). Tokens are separated by blanks; \"...\" "
    "takes\n"
    "the escapes \\\" \\\\ \\n \\r \\t \\xHH, '...' is taken literally; "
    "empty\n"
    "lines and lines starting with # are skipped. Answers in simple format:\n"
    "OK, a value in double quotes (same escapes), a status row, or\n"
    "ERROR CODE message.\n"
    "\n"
    "Exit status (one-shot): 0 success, 1 key (or user, role, permission)\n"
    "not found, 2 usage error, 3 unavailable or timed out (for a write:\n"
    "not applied, or, with the word 'unknown' in the message, maybe\n"
    "applied), 4 cas mismatch, 5 the cluster refused the request,\n"
    "6 unauthenticated (auth is enabled and no --user was given, or a\n"
    "wrong user name or password), 7 permission denied (the user's roles\n"
    "do not allow it), 8 compacted (events, compact: that history is\n"
    "gone), 9 no such lease (lease, put --lease), 10 the lock or the\n"
    "leadership was lost (lock, elect), 11 a local file could not be read\n"
    "or written (put --file, put -, snapshot save; nothing was sent, or no\n"
    "snapshot was kept). A txn whose compares failed\n"
    "exits 0 and prints FAILURE. lock -- COMMAND exits with COMMAND's\n"
    "status.\n"
    "Pipe mode exits 0 at the end of input.\n"
    "Error codes: NOT_FOUND, CAS_MISMATCH, TIMEOUT, UNAVAILABLE,\n"
    "BAD_REQUEST, VALUE_TOO_LARGE, NO_SPACE, DISABLED, UNAUTHENTICATED,\n"
    "PERMISSION_DENIED, COMPACTED, FUTURE_REVISION, LEASE_NOT_FOUND,\n"
    "NOT_HELD, TOO_MANY_KEYS, IO_ERROR, USAGE, INTERNAL. With -w json,\n"
    "keys and values are base64.\n";

static const struct
{
    const char *name;
    const char *help;
} commands[] = {
    {"get",
     "kvctl get KEY\n  Print KEY's value. Exit 1 if there is no "
     "such key.\n  Linearizable unless --stale is given.\n"
     "kvctl get KEY [END] [--prefix|--from-key] [--limit N] [--keys-only]\n"
     "          [--count-only] [--rev-info] [--sort-order ascend|descend]\n"
     "          [--print-value-only]\n"
     "  --print-value-only on KEY alone prints the value's bytes as they\n"
     "  are, without a newline added (on a range: each value, then a\n"
     "  newline). The keys of a range, as etcdctl: each key, then its value, "
     "on\n"
     "  lines of their own (exit 0 also when there are none). END: the\n"
     "  keys up to, not including, END; --prefix: every key that starts\n"
     "  with KEY; --from-key: every key from KEY on. --rev-info adds each\n"
     "  key's revisions and a last line revision=R count=N more=B. Without\n"
     "  --limit, a range too large for one reply is read page by page.\n"
     "  -w json: {\"ok\":true,\"value\":BASE64} for KEY alone; a range in\n"
     "  etcd's shape, keys and values in base64:\n"
     "  {\"ok\":true,\"header\":{\"revision\":R},\"kvs\":[{\"key\":..,\n"
     "  \"create_revision\":..,\"mod_revision\":..,\"version\":..,\n"
     "  \"value\":..}],\"count\":N,\"more\":false}\n"},
    {"put",
     "kvctl put KEY VALUE [--prev-kv] [--ignore-value] [--lease ID]\n"
     "kvctl put KEY - ...\nkvctl put KEY --file FILE ...\n  Set "
     "KEY to VALUE (applied exactly once, even across retries); with -,\n"
     "  to all of standard input; with --file, to FILE's bytes (exit 11,\n"
     "  IO_ERROR, when it cannot be read: nothing is sent). Not in pipe\n"
     "  mode: - is refused there (standard input holds the commands).\n"
     "  --prev-kv prints the key as it was; --ignore-value (without VALUE)\n"
     "  keeps the value and bumps the key's revision; --lease ID (hex, as\n"
     "  lease grant prints it) attaches the key to a lease: it is deleted\n"
     "  when the lease ends (a put without --lease takes it off again).\n"
     "  Exit 9 (LEASE_NOT_FOUND) when there is no such lease: nothing is\n"
     "  written. A KEY or VALUE starting with - goes after the word --;\n"
     "  options may come before or after the arguments.\n"},
    {"lease",
     "kvctl lease grant TTL\n"
     "  Grant a lease of TTL seconds (the cluster raises a TTL below its\n"
     "  --lease-min-ttl): prints lease ID granted with TTL(Ns), ID in hex.\n"
     "kvctl lease revoke ID\n"
     "  End the lease now: its keys are deleted, all at one revision.\n"
     "kvctl lease keep-alive ID [--once]\n"
     "  Renew the lease every third of its TTL until interrupted (or once),\n"
     "  a line per renewal: lease ID keepalived with TTL(N). Stops with\n"
     "  exit 9 when the lease is gone, 3 when no renewal got through for\n"
     "  a whole TTL (the lease may have expired).\n"
     "kvctl lease timetolive ID [--keys]\n"
     "  Its TTL, the seconds it has left by the leader's clock, and with\n"
     "  --keys the keys attached to it.\n"
     "kvctl lease list\n"
     "  Every lease's id.\n"
     "  -w json: {\"ok\":true,\"id\":N,\"ttl\":N,...} (ids as numbers);\n"
     "  exit 9 (LEASE_NOT_FOUND) for a lease that expired, was revoked or\n"
     "  never existed.\n"},
    {"txn",
     "kvctl txn [-i|--interactive] [--json-input] < TXN\n"
     "  One transaction, from standard input, in etcdctl's form: compares\n"
     "  one per line, an empty line, the ops run when they all hold, an\n"
     "  empty line, the ops run otherwise:\n"
     "    mod(\"k\") > \"5\"\n"
     "    value(\"k2\") = \"v\"\n"
     "\n"
     "    put k \"new value\"\n"
     "    get k2\n"
     "\n"
     "    del k3\n"
     "  Targets: value, version, create, mod; operators = != < >. Ops: put\n"
     "  K V, get K [END], del K [END] with their options (--prefix, ...).\n"
     "  Input starting with { (or --json-input) is etcd's JSON form, keys\n"
     "  and values in base64 (docs/clerk.md). -i prompts on a terminal.\n"
     "  Prints SUCCESS or FAILURE, then each op's answer after an empty\n"
     "  line; exits 0 either way.\n"},
    {"compact",
     "kvctl compact REV\n  Drop the history of changes up to and including "
     "revision REV\n  (keys are kept). Exit 8 (COMPACTED) when it is gone "
     "already,\n  5 (FUTURE_REVISION) for a revision the store has not "
     "reached.\n"},
    {"events",
     "kvctl events [KEY [END]] [--prefix|--from-key] --rev N [--limit N]\n"
     "  The changes to the keys (every key without KEY) made at revision\n"
     "  N and after, oldest first: PUT, the key, its value; or DELETE and\n"
     "  the key. -w json adds next_revision, where to poll next. Exit 8\n"
     "  (COMPACTED) when N is no longer kept. Also: kvctl history.\n"},
    {"lock",
     "kvctl lock NAME [--ttl SECONDS] [--wait-ms N] [-- COMMAND [ARG...]]\n"
     "  Take the lock NAME: a lease of --ttl seconds (default 10), kept\n"
     "  alive while kvctl runs, and a key NAME/LEASE attached to it; waits\n"
     "  in line (--wait-ms at most). With COMMAND, runs it holding the lock,\n"
     "  with RAFTKV_LOCK_KEY, RAFTKV_LOCK_TOKEN (the fencing token: the\n"
     "  key's create revision) and RAFTKV_LOCK_LEASE in its environment,\n"
     "  then releases it and exits with COMMAND's status. Without one,\n"
     "  prints the key and the token and holds the lock until interrupted.\n"
     "  If the lease cannot be kept alive, COMMAND gets SIGTERM and kvctl\n"
     "  exits 10 (NOT_HELD). Guard writes with the token:\n"
     "  txn: create(\"$RAFTKV_LOCK_KEY\") = \"$RAFTKV_LOCK_TOKEN\"\n"
     "  (docs/recipes.md).\n"},
    {"elect",
     "kvctl elect NAME PROPOSAL [--ttl SECONDS] [--wait-ms N]\n"
     "  Campaign in the election NAME with PROPOSAL; once leader, prints\n"
     "  its key and PROPOSAL and leads until interrupted (then resigns).\n"
     "  Exit 10 (NOT_HELD) when the lease behind it was lost.\n"
     "kvctl elect NAME\n"
     "  Print the leader's proposal, and again each time it changes\n"
     "  ((no leader) when nobody leads), until interrupted.\n"},
    {"watch",
     "kvctl watch KEY [END] [--prefix|--from-key] [--rev N] [--count N]\n"
     "            [--progress-ms N] [--require-leader] [--prev-kv]\n"
     "  Print the changes to the keys as they happen, one line each:\n"
     "  PUT REVISION \"KEY\" \"VALUE\" or DELETE REVISION \"KEY\" (quoted\n"
     "  with escapes); -w json prints an object per event, key and value\n"
     "  in base64. --rev N starts at revision N (the history since then\n"
     "  first); without it, at the changes after now. Runs until\n"
     "  interrupted or --count N events; when its node fails it goes on\n"
     "  at another, missing nothing. --progress-ms N prints PROGRESS REV\n"
     "  while nothing changes. --prev-kv adds prev \"OLD VALUE\" to events of\n"
     "  keys that existed (prev-compacted when that version is gone).\n"
     "  Exit 8 (COMPACTED) when N is no longer kept.\n"},
    {"append",
     "kvctl append KEY VALUE\n  Append VALUE to KEY's value; an "
     "absent KEY counts as empty.\n"},
    {"del",
     "kvctl del KEY\n  Delete KEY. Exit 1 if there was no such "
     "key.\n"
     "kvctl del KEY [END] [--prefix|--from-key] [--prev-kv]\n"
     "  Delete every key of a range in one write; prints how many, then\n"
     "  with --prev-kv each deleted key and its value (exit 0 also when\n"
     "  none was there).\n"},
    {"cas",
     "kvctl cas KEY EXPECTED NEW\nkvctl cas --absent KEY NEW\n  "
     "Set KEY to NEW only if it holds EXPECTED (or, with --absent,\n"
     "  only if it does not exist). Exit 4 when it did not: nothing "
     "is\n  written, and the current value is shown.\n"},
    {"status",
     "kvctl status\n  A row per node: id, address, role, term, "
     "leader, commit index,\n  applied index, last log index, "
     "snapshot index, and how far it\n  trails the leader: LAG, the "
     "leader's commit index minus its applied\n  index (for nodes that "
     "answer), and REPL_LAG, the leader's last log\n  index minus what "
     "the leader knows the node stores (also for a node\n  that does not "
     "answer). Exit 3 when no node knows a leader.\n"},
    {"transfer-leader",
     "kvctl transfer-leader ID\nkvctl transfer-leader auto\n"
     "  Hand leadership to node ID: the leader brings its log up to date,\n"
     "  then has it start an election at once, so the cluster changes\n"
     "  leader without an election timeout of unavailability. Use it\n"
     "  before stopping the leader for maintenance. With auto the leader\n"
     "  picks its most up-to-date follower. Answers once the node leads\n"
     "  (OK leader=ID). Exit 5 (BAD_REQUEST) for an id not in the cluster;\n"
     "  exit 3 (TIMEOUT) when the node did not take over within about an\n"
     "  election timeout (it is down or cut off; the old leader stays), or\n"
     "  (UNAVAILABLE) with no leader or another transfer under way.\n"},
    {"member",
     "kvctl member list\n"
     "  The cluster's members as its leader knows them: id, voter or\n"
     "  learner, peer address, client address, and (from the leader) how\n"
     "  far each has caught up. PENDING when the last change is not\n"
     "  committed yet.\n"
     "kvctl member add ID PEER_ADDR ADDR\n"
     "  Add node ID as a learner: it gets the log but has no vote. Then\n"
     "  start it with kvserver --id ID --join (its --cluster giving its own\n"
     "  addresses) and promote it once it caught up. PEER_ADDR is the\n"
     "  HOST:PORT the nodes reach it at (Raft), ADDR the clients'.\n"
     "kvctl member promote ID\n"
     "  Make learner ID a voter. Exit 3 (UNAVAILABLE) while it has not\n"
     "  caught up: try again.\n"
     "kvctl member remove ID\n"
     "  Remove node ID for good (the leader too: it hands leadership over\n"
     "  first); the node stops. Its id is never used again.\n"
     "kvctl member update ID PEER_ADDR ADDR\n"
     "  Change node ID's addresses (a host that moved).\n"
     "  One change at a time: the next waits until the last is committed\n"
     "  (exit 3 meanwhile). Root only when auth is enabled. Replace a node:\n"
     "  add the new host under a new id, promote it, remove the old one.\n"},
    {"snapshot",
     "kvctl snapshot save FILE|-\n"
     "  Save a consistent copy of the whole state (keys, values and client\n"
     "  sessions) to FILE. The leader reads it under one transaction while\n"
     "  writes go on; the copy holds every write acknowledged before the\n"
     "  command started and ends in a CRC-32C, checked before FILE is\n"
     "  written (through FILE.tmp, renamed at the end). To start a new\n"
     "  cluster from it, run on every node, with an empty --data-dir:\n"
     "    kvserver --id N --cluster LIST --data-dir DIR --restore FILE\n"
     "  then start the nodes as usual. Exit 3 when no leader answered or\n"
     "  the leader changed midway (run it again); exit 11 (IO_ERROR) when\n"
     "  FILE cannot be written or is not a regular file (found before the\n"
     "  cluster is asked). With -, the snapshot goes to standard output\n"
     "  (not a terminal, not in pipe mode) and the OK line to standard\n"
     "  error.\n"},
    {"fault",
     "kvctl fault NODE show\n"
     "kvctl fault NODE clear\n"
     "kvctl fault NODE TARGET SPEC...\n"
     "  Fault injection on servers started with --enable-fault-injection\n"
     "  (others refuse: error DISABLED, exit 5). NODE is a node id or all.\n"
     "  TARGET is whose traffic NODE mistreats: a node id (NODE's Raft\n"
     "  calls to that node: one direction of the link), clients (client\n"
     "  calls arriving at NODE), peers (every other node) or all. SPEC\n"
     "  replaces TARGET's rule; its words:\n"
     "    cut                nothing passes\n"
     "    drop-request=P     lose a share P (0 to 1) of requests\n"
     "    drop-reply=P       lose a share P of replies after the handler ran\n"
     "    delay=MIN-MAX      delay every request MIN to MAX ms (or delay=MS)\n"
     "    duplicate=P        deliver a share P of requests twice\n"
     "    reorder=P[:MIN-MAX] hold a share P of replies back (200-2200 ms)\n"
     "    unreliable         drop-request=0.1 drop-reply=0.1 delay=0-27\n"
     "    none               remove the rule\n"
     "    seed=N             seed the random choices (drops, delays, the\n"
     "                       time a cut call takes to fail) with N\n"
     "  Prints the seed it used (seed=N; drawn from the clock unless\n"
     "  given: the same seed gives each rule the same random sequence),\n"
     "  then the rules in force with what each has done so far.\n"},
    {"partition",
     "kvctl partition IDS IDS... [seed=N]\n  Cut every link between nodes "
     "of different groups (IDS is a\n  comma-separated list of node ids; a "
     "node in no group is alone),\n  replacing earlier faults. Needs "
     "--enable-fault-injection. Prints\n  the seed of the cut calls' random "
     "failure times (seed=N).\n  Example: kvctl partition 1,2 3,4,5\n"},
    {"heal", "kvctl heal\n  Remove every injected fault on every node.\n"},
    {"user",
     "kvctl user add NAME[:PASSWORD] [--password-file F]\n"
     "kvctl user delete NAME\n"
     "kvctl user passwd NAME[:PASSWORD] [--password-file F]\n"
     "kvctl user get NAME\n"
     "kvctl user list\n"
     "kvctl user grant-role USER ROLE\n"
     "kvctl user revoke-role USER ROLE\n"
     "  Users (docs/auth.md). The new password comes after the colon, from\n"
     "  the first line of F, or is asked for (twice, without echo) when\n"
     "  standard input is a terminal. The server hashes it (Argon2id); it\n"
     "  is never stored. Once auth is enabled these need --user with the\n"
     "  role root (passwd and get also the user itself). ROLE root is\n"
     "  built in and allows everything.\n"},
    {"role",
     "kvctl role add NAME\n"
     "kvctl role delete NAME\n"
     "kvctl role get NAME\n"
     "kvctl role list\n"
     "kvctl role grant-permission [--prefix|--from-key] ROLE "
     "read|write|readwrite KEY [END]\n"
     "kvctl role revoke-permission [--prefix|--from-key] ROLE KEY [END]\n"
     "  Roles and their permissions: KEY alone is that key; KEY END the\n"
     "  keys from KEY up to, not including, END; --prefix every key that\n"
     "  starts with KEY; --from-key every key from KEY on (END \"\\0\").\n"
     "  Granting the same KEY and END again replaces the type. Deleting a\n"
     "  role takes it from every user.\n"},
    {"auth",
     "kvctl auth enable\nkvctl auth disable\nkvctl auth status\n"
     "  enable needs a user root with the role root (kvctl user add root;\n"
     "  kvctl user grant-role root root). From then on every call needs\n"
     "  --user; admin commands (transfer-leader, snapshot save, fault)\n"
     "  need the role root. disable makes every token void. status is\n"
     "  open to anyone: enabled or not, and the last auth change's index.\n"},
    {"help",
     "kvctl help [COMMAND]\n  The usage of kvctl or of one "
     "command.\n"},
};

static enum format fmt = FMT_SIMPLE;
static bool pipe_mode;

/* --------------------------------------------------------------- input */

/* All of f, NUL-terminated (*len: the bytes before the NUL); NULL with
 * errno set when reading failed or memory ran out. */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096;
    char *buf = malloc(cap);
    *len = 0;
    while (buf) {
        if (*len + 1 == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + *len, 1, cap - *len - 1, f);
        *len += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno ? errno : EIO;
                free(buf);
                errno = e;
                return NULL;
            }
            buf[*len] = 0;
            break;
        }
    }
    if (!buf) {
        errno = ENOMEM;
    }
    return buf;
}

/* --------------------------------------------------------------- output */

/* The escapes kvctl's quoted values take; true if c had one. */
static bool put_escape(FILE *f, unsigned char c)
{
    static const char from[] = "\"\\\n\r\t", to[] = "\"\\nrt";
    const char *hit = c ? strchr(from, c) : NULL;
    if (!hit) {
        return false;
    }
    fputc('\\', f);
    fputc(to[hit - from], f);
    return true;
}

/* Bytes as a JSON string: valid UTF-8 as it is, any other byte as the
 * code point of the same number (U+0080 to U+00FF). */
static json_t *jstr(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *buf = malloc(2 * n + 1);
    size_t o = 0;
    if (!buf) {
        return json_null();
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        size_t seq = c >= 0xf0 && c < 0xf5   ? 4
                     : c >= 0xe0 && c < 0xf0 ? 3
                     : c >= 0xc2 && c < 0xe0 ? 2
                                             : 1;
        bool valid = c < 0x80 || (seq > 1 && i + seq <= n);
        for (size_t k = 1; c >= 0x80 && valid && k < seq; k++) {
            valid = (s[i + k] & 0xc0) == 0x80;
        }
        if (c >= 0x80 && valid) {
            memcpy(buf + o, s + i, seq);
            o += seq;
            i += seq - 1;
        } else if (c >= 0x80) {
            buf[o++] = (char)(0xc0 | c >> 6);
            buf[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            buf[o++] = (char)c;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j ? j : json_null();
}

/* A C string as a JSON string. */
static json_t *jcstr(const char *s)
{
    return jstr(s, strlen(s));
}

/* Bytes in base64, as etcd's JSON gives keys and values. */
static json_t *jb64(const void *p, size_t n)
{
    char *b = kvctl_base64(p, n);
    json_t *j = b ? json_string(b) : json_null();
    free(b);
    return j;
}

static json_t *ju64(uint64_t v)
{
    return json_integer((json_int_t)v);
}

/* The answer when an answer could not be built; made at start. */
static json_t *no_memory_answer;

/* Print one JSON answer to f on a line of its own, and drop it. */
static void emit_to(FILE *f, json_t *o)
{
    const size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(6);
    if (!o || json_dumpf(o, f, flags) != 0) {
        json_dumpf(no_memory_answer, f, flags);
    }
    fputc('\n', f);
    json_decref(o);
}

static void emit(json_t *o)
{
    emit_to(stdout, o);
}

/* {"ok":true} to add an answer's members to. */
static json_t *ok_object(void)
{
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_true());
    return o;
}

/* A value in double quotes with the input's escapes: ASCII only. */
static void put_quoted(FILE *f, const unsigned char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (put_escape(f, c)) {
            continue;
        }
        if (c < 0x20 || c >= 0x7f) {
            fprintf(f, "\\x%02x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void answer_ok(void)
{
    if (fmt == FMT_JSON) {
        emit(ok_object());
    } else {
        puts("OK");
    }
}

static void answer_value(const void *v, size_t n)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "value", jb64(v, n));
        emit(o);
    } else if (pipe_mode) {
        put_quoted(stdout, v, n);
        putchar('\n');
    } else {
        fwrite(v, 1, n, stdout);
        putchar('\n');
    }
}

/* Report a failure; returns the one-shot exit code. */
static int answer_error(const char *code,
                        const char *msg,
                        bool unknown,
                        const void *current,
                        size_t current_len,
                        bool has_cur)
{
    if (fmt == FMT_JSON) {
        json_t *o = json_object();
        json_object_set_new(o, "ok", json_false());
        json_object_set_new(o, "error", jcstr(code));
        json_object_set_new(o, "message", jcstr(msg));
        if (unknown) {
            json_object_set_new(o, "unknown", json_true());
        }
        if (has_cur) {
            json_object_set_new(o, "current", jb64(current, current_len));
        }
        emit(o);
    } else {
        FILE *f = pipe_mode ? stdout : stderr;
        fprintf(f, "%s%s%s %s%s", pipe_mode ? "ERROR " : "kvctl: ", code,
                pipe_mode ? "" : ":", msg,
                unknown ? " (outcome unknown: the write may have been applied)"
                        : "");
        if (has_cur) {
            fputs("; current value ", f);
            put_quoted(f, current, current_len);
        }
        fputc('\n', f);
    }
    if (!strcmp(code, "NOT_FOUND")) {
        return EXIT_NOT_FOUND;
    }
    if (!strcmp(code, "USAGE")) {
        return EXIT_USAGE;
    }
    if (!strcmp(code, "CAS_MISMATCH")) {
        return EXIT_CAS;
    }
    if (!strcmp(code, "TIMEOUT") || !strcmp(code, "UNAVAILABLE") ||
        !strcmp(code, "SESSION_EXPIRED")) {
        return EXIT_UNAVAILABLE;
    }
    if (!strcmp(code, "UNAUTHENTICATED")) {
        return EXIT_UNAUTHENTICATED;
    }
    if (!strcmp(code, "PERMISSION_DENIED")) {
        return EXIT_PERMISSION_DENIED;
    }
    if (!strcmp(code, "COMPACTED")) {
        return EXIT_COMPACTED;
    }
    if (!strcmp(code, "LEASE_NOT_FOUND")) {
        return EXIT_LEASE_NOT_FOUND;
    }
    if (!strcmp(code, "NOT_HELD")) {
        return EXIT_NOT_HELD;
    }
    if (!strcmp(code, "IO_ERROR")) {
        return EXIT_IO;
    }
    return EXIT_ERROR;
}

static int answer_clerk(struct clerk *ck, int err)
{
    const char *msg = clerk_errmsg(ck);
    return answer_error(
        clerk_error_code(err), msg[0] ? msg : clerk_strerror(err),
        err == CLERK_UNKNOWN_OUTCOME || err == CLERK_SESSION_EXPIRED, NULL, 0,
        false);
}

static int usage_error(const char *msg)
{
    return answer_error("USAGE", msg, false, NULL, 0, false);
}

/* A local file failed: what was done, the file, errno's text. */
static int io_error(const char *what, const char *path, int err)
{
    char msg[4400];
    snprintf(msg, sizeof msg, "%s %.4000s: %s", what, path, strerror(err));
    return answer_error("IO_ERROR", msg, false, NULL, 0, false);
}

/* ------------------------------------------------------------- commands */

/* A number, or null when unknown. */
static json_t *ju64_known(bool known, uint64_t v)
{
    return known ? ju64(v) : json_null();
}

/* A number, or "-" when unknown. */
static void fmt_u64(char *out, size_t len, bool known, uint64_t v)
{
    if (known) {
        snprintf(out, len, "%llu", (unsigned long long)v);
    } else {
        snprintf(out, len, "-");
    }
}

static int cmd_status(struct clerk *ck)
{
    struct clerk_node_status *st;
    size_t n;
    int err = clerk_status(ck, &st, &n);
    if (err) {
        return answer_clerk(ck, err);
    }
    bool leader_known = false;
    for (size_t i = 0; i < n; i++) {
        leader_known |= st[i].reachable && st[i].leader != 0;
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object(), *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            const struct clerk_node_status *s = &st[i];
            json_t *e = json_object();
            json_object_set_new(e, "address", jcstr(s->address));
            if (s->reachable) {
                json_object_set_new(e, "reachable", json_true());
                json_object_set_new(e, "id", ju64(s->id));
                json_object_set_new(e, "role", jcstr(s->role));
                json_object_set_new(e, "term", ju64(s->term));
                json_object_set_new(e, "leader", ju64(s->leader));
                json_object_set_new(e, "commit_index", ju64(s->commit_index));
                json_object_set_new(e, "applied_index", ju64(s->applied_index));
                json_object_set_new(e, "last_log_index",
                                    ju64(s->last_log_index));
                json_object_set_new(e, "snapshot_index",
                                    ju64(s->snapshot_index));
                json_object_set_new(e, "disk_full", json_boolean(s->disk_full));
            } else {
                json_object_set_new(e, "reachable", json_false());
                if (s->other_cluster) {
                    json_object_set_new(e, "other_cluster", json_true());
                }
                json_object_set_new(e, "error", jcstr(s->error));
                if (s->id) {
                    json_object_set_new(e, "id", ju64(s->id));
                }
            }
            /* Unknown lags are null, never 0. */
            json_object_set_new(e, "lag",
                                ju64_known(s->lag_known, s->applied_lag));
            json_object_set_new(
                e, "repl_lag",
                ju64_known(s->progress_known, s->replication_lag));
            json_object_set_new(e, "match_index",
                                ju64_known(s->progress_known, s->match_index));
            json_object_set_new(e, "ack_age_ms",
                                ju64_known(s->progress_known, s->ack_age_ms));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "nodes", arr);
        emit(o);
    } else if (fmt == FMT_TABLE) {
        printf("%-4s %-22s %-13s %8s %6s %10s %10s %10s %10s %8s %8s\n", "ID",
               "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED",
               "LAST_INDEX", "SNAPSHOT", "LAG", "REPL_LAG");
        for (size_t i = 0; i < n; i++) {
            const struct clerk_node_status *s = &st[i];
            char id[24], lag[24], repl[24];
            fmt_u64(id, sizeof id, s->id != 0, s->id);
            fmt_u64(lag, sizeof lag, s->lag_known, s->applied_lag);
            fmt_u64(repl, sizeof repl, s->progress_known, s->replication_lag);
            if (!s->reachable) {
                /* (A node of another cluster is no member: its error
                 * says so.) */
                printf("%-4s %-22s %s: %s", id, s->address,
                       s->other_cluster ? "not a member" : "unreachable",
                       s->error);
                if (s->progress_known) {
                    printf(" (leader: REPL_LAG %s, last answer ~%llu ms ago)",
                           repl, (unsigned long long)s->ack_age_ms);
                }
                putchar('\n');
                continue;
            }
            printf(
                "%-4s %-22s %-13s %8llu %6llu %10llu %10llu %10llu "
                "%10llu %8s %8s%s\n",
                id, s->address, s->role, (unsigned long long)s->term,
                (unsigned long long)s->leader,
                (unsigned long long)s->commit_index,
                (unsigned long long)s->applied_index,
                (unsigned long long)s->last_log_index,
                (unsigned long long)s->snapshot_index, lag, repl,
                s->disk_full ? " DISK FULL" : "");
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const struct clerk_node_status *s = &st[i];
            if (!s->reachable) {
                printf("address=%s reachable=false%s error=", s->address,
                       s->other_cluster ? " other_cluster=true" : "");
                put_quoted(stdout, (unsigned char *)s->error, strlen(s->error));
                if (s->id) {
                    printf(" id=%llu", (unsigned long long)s->id);
                }
            } else {
                printf(
                    "id=%llu address=%s role=%s term=%llu leader=%llu "
                    "commit=%llu applied=%llu last_index=%llu snapshot=%llu"
                    "%s",
                    (unsigned long long)s->id, s->address, s->role,
                    (unsigned long long)s->term, (unsigned long long)s->leader,
                    (unsigned long long)s->commit_index,
                    (unsigned long long)s->applied_index,
                    (unsigned long long)s->last_log_index,
                    (unsigned long long)s->snapshot_index,
                    s->disk_full ? " disk_full=true" : "");
            }
            /* Unknown lags are left out, never shown as 0. */
            if (s->lag_known) {
                printf(" lag=%llu", (unsigned long long)s->applied_lag);
            }
            if (s->progress_known) {
                printf(" repl_lag=%llu ack_age_ms=%llu",
                       (unsigned long long)s->replication_lag,
                       (unsigned long long)s->ack_age_ms);
            }
            putchar('\n');
        }
    }
    clerk_free(st);
    return leader_known ? EXIT_OK : EXIT_UNAVAILABLE;
}

/* kvctl transfer-leader ID|auto */
static int cmd_transfer_leader(struct clerk *ck, const char *arg)
{
    uint64_t target = 0;
    if (strcmp(arg, "auto") != 0) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-' || v == 0) {
            return usage_error(
                "ID is a node id (see kvctl status), or auto to let the "
                "leader pick");
        }
        target = v;
    }
    uint64_t leader = 0;
    int err = clerk_transfer_leader(ck, target, &leader);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "leader", ju64(leader));
        emit(o);
    } else {
        printf("OK leader=%llu\n", (unsigned long long)leader);
    }
    return EXIT_OK;
}

/* kvctl member list | add ID PEER ADDR | promote ID | remove ID |
 * update ID PEER ADDR */
static void print_members(struct clerk *ck, const struct clerk_members *m)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object(), *arr = json_array(), *rm = json_array();
        for (size_t i = 0; i < m->n; i++) {
            const struct clerk_member *e = &m->members[i];
            json_array_append_new(
                arr, json_pack("{sIsbssss}", "id", (json_int_t)e->id, "learner",
                               e->learner, "peer_address", e->peer_address,
                               "address", e->address));
        }
        for (size_t i = 0; i < m->n_removed; i++) {
            json_array_append_new(rm, ju64(m->removed[i]));
        }
        json_object_set_new(o, "members", arr);
        json_object_set_new(o, "removed", rm);
        json_object_set_new(o, "committed", json_boolean(m->committed));
        json_object_set_new(o, "leader", ju64(m->leader_id));
        emit(o);
        return;
    }
    /* The leader's view of each member's progress, when it answers. */
    struct clerk_node_status *st = NULL;
    size_t n_st = 0;
    if (clerk_status(ck, &st, &n_st) != CLERK_OK) {
        st = NULL;
        n_st = 0;
    }
    if (fmt == FMT_TABLE) {
        printf("%-6s %-8s %-24s %-24s %10s\n", "ID", "ROLE", "PEER_ADDRESS",
               "ADDRESS", "REPL_LAG");
    }
    for (size_t i = 0; i < m->n; i++) {
        const struct clerk_member *e = &m->members[i];
        char lag[24] = "-";
        for (size_t k = 0; k < n_st; k++) {
            if (st[k].id == e->id && st[k].progress_known) {
                snprintf(lag, sizeof lag, "%llu",
                         (unsigned long long)st[k].replication_lag);
            }
        }
        const char *role = e->learner              ? "learner"
                           : e->id == m->leader_id ? "leader"
                                                   : "voter";
        if (fmt == FMT_TABLE) {
            printf("%-6llu %-8s %-24s %-24s %10s\n", (unsigned long long)e->id,
                   role, e->peer_address, e->address, lag);
        } else {
            printf("id=%llu role=%s peer_address=%s address=%s",
                   (unsigned long long)e->id, role, e->peer_address,
                   e->address);
            if (strcmp(lag, "-") != 0) {
                printf(" repl_lag=%s", lag);
            }
            putchar('\n');
        }
    }
    if (!m->committed) {
        printf("PENDING the last change is not committed yet\n");
    }
    clerk_free(st);
}

static bool parse_id(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == 0 ||
        v > (unsigned long long)INT64_MAX) {
        return false;
    }
    *out = v;
    return true;
}

static int cmd_member(struct clerk *ck, struct tok *t, int n)
{
    const char *use =
        "usage: kvctl member list | add ID PEER_ADDR ADDR | promote ID | "
        "remove ID | update ID PEER_ADDR ADDR";
    if (n < 2) {
        return usage_error(use);
    }
    const char *sub = t[1].p;
    struct clerk_members *m = NULL;
    int err;
    if (!strcmp(sub, "list")) {
        if (n != 2) {
            return usage_error(use);
        }
        err = clerk_member_list(ck, &m);
        if (err) {
            return answer_clerk(ck, err);
        }
        print_members(ck, m);
        clerk_members_free(m);
        return EXIT_OK;
    }
    enum clerk_member_change type;
    int want;
    if (!strcmp(sub, "add")) {
        type = CLERK_MEMBER_ADD;
        want = 5;
    } else if (!strcmp(sub, "update")) {
        type = CLERK_MEMBER_UPDATE;
        want = 5;
    } else if (!strcmp(sub, "promote")) {
        type = CLERK_MEMBER_PROMOTE;
        want = 3;
    } else if (!strcmp(sub, "remove")) {
        type = CLERK_MEMBER_REMOVE;
        want = 3;
    } else {
        return usage_error(use);
    }
    uint64_t id;
    if (n != want) {
        return usage_error(use);
    }
    if (!parse_id(t[2].p, &id)) {
        return usage_error("ID is a node id: 1 to 2^63-1");
    }
    err = clerk_member_change(ck, type, id, want == 5 ? t[3].p : NULL,
                              want == 5 ? t[4].p : NULL, &m);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        print_members(ck, m);
    } else {
        printf("OK %s\n", clerk_errmsg(ck));
    }
    clerk_members_free(m);
    return EXIT_OK;
}

/* kvctl snapshot save FILE */
static int to_file(const void *data, size_t len, void *arg)
{
    return fwrite(data, 1, len, arg) == len ? 0 : -1;
}

/* The OK answer of snapshot save (to standard error when the snapshot
 * itself went to standard output). */
static void answer_saved(FILE *f,
                         const char *path,
                         uint64_t index,
                         uint64_t term,
                         uint64_t bytes)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "file", jcstr(path));
        json_object_set_new(o, "index", ju64(index));
        json_object_set_new(o, "term", ju64(term));
        json_object_set_new(o, "bytes", ju64(bytes));
        emit_to(f, o);
    } else {
        fprintf(f, "OK saved %s: state at index %llu, term %llu, %llu bytes\n",
                path, (unsigned long long)index, (unsigned long long)term,
                (unsigned long long)bytes);
    }
}

/* kvctl snapshot save -: the snapshot on standard output. */
static int snapshot_to_stdout(struct clerk *ck)
{
    if (pipe_mode) {
        return usage_error(
            "snapshot save -: in pipe mode standard output holds the "
            "answers; give a FILE");
    }
    if (isatty(STDOUT_FILENO)) {
        return usage_error(
            "snapshot save -: standard output is a terminal; redirect it "
            "(kvctl snapshot save - > FILE) or give a FILE");
    }
    uint64_t index = 0, term = 0, bytes = 0;
    int err = clerk_snapshot_save(ck, to_file, stdout, &index, &term, &bytes);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fflush(stdout) != 0) {
        return io_error("snapshot save: writing", "standard output", errno);
    }
    answer_saved(stderr, "-", index, term, bytes);
    return EXIT_OK;
}

static int cmd_snapshot_save(struct clerk *ck, const char *path)
{
    if (!strcmp(path, "-")) {
        return snapshot_to_stdout(ck);
    }
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        return usage_error("FILE: path too long");
    }
    /* FILE.tmp is renamed over FILE at the end: a directory would fail
     * only after the whole transfer, and a device or a FIFO (/dev/stdout,
     * /dev/full) would be replaced by a regular file. */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        char msg[4400];
        snprintf(msg, sizeof msg,
                 "snapshot save: %.4000s is %s, not a regular file (give a "
                 "new or regular FILE, or - for standard output)",
                 path, S_ISDIR(st.st_mode) ? "a directory" : "a special file");
        return answer_error("IO_ERROR", msg, false, NULL, 0, false);
    }
    /* Before the cluster is asked: a FILE that cannot be written is a
     * local error of its own (exit 11), not a failed snapshot. */
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        return io_error("snapshot save: cannot create", tmp, errno);
    }
    uint64_t index = 0, term = 0, bytes = 0;
    int err = clerk_snapshot_save(ck, to_file, fp, &index, &term, &bytes);
    bool ok = !err && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int save_errno = errno;
    if (fclose(fp) != 0) {
        ok = false;
    }
    if (err) {
        unlink(tmp);
        return answer_clerk(ck, err);
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = ok ? open(dirname(dir), O_RDONLY | O_DIRECTORY) : -1;
    if (!ok || rename(tmp, path) != 0 || dfd < 0 || fsync(dfd) != 0) {
        int e = ok ? errno : save_errno;
        if (dfd >= 0) {
            close(dfd);
        }
        unlink(tmp);
        return io_error("snapshot save: writing", path, e);
    }
    close(dfd);
    answer_saved(stdout, path, index, term, bytes);
    return EXIT_OK;
}

/* --------------------------------------------------------- fault command */

#define MAX_NODES 16

/* Server indexes of a NODE argument: an id, or "all". */
/* One node's rules for a fault command. */
struct node_rules
{
    size_t server;                           /* index in the server list */
    uint64_t id;                             /* node id */
    bool chosen;                             /* the command is for it */
    struct clerk_fault rules[MAX_NODES + 1]; /* to set */
    size_t n;                                /* their number */
};

/* Every reachable node, chosen by NODE: an id, or "all". */
static int resolve_nodes(struct clerk *ck,
                         const char *arg,
                         struct node_rules *nodes,
                         size_t *n_nodes)
{
    struct clerk_node_status *st;
    size_t n;
    int err = clerk_status(ck, &st, &n);
    if (err) {
        return answer_clerk(ck, err);
    }
    bool all = !strcmp(arg, "all");
    char *end;
    errno = 0;
    unsigned long long want = all ? 0 : strtoull(arg, &end, 10);
    if (!all && (errno || end == arg || *end || want == 0)) {
        clerk_free(st);
        return usage_error("NODE is a node id or 'all'");
    }
    size_t chosen = 0;
    *n_nodes = 0;
    for (size_t i = 0; i < n && *n_nodes < MAX_NODES; i++) {
        if (st[i].reachable) {
            struct node_rules *nr = &nodes[(*n_nodes)++];
            *nr = (struct node_rules){.server = i, .id = st[i].id};
            nr->chosen = all || st[i].id == want;
            chosen += nr->chosen;
        }
    }
    clerk_free(st);
    if (chosen == 0) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 all ? "no node answered%s"
                     : "no reachable node has id %s (see kvctl status)",
                 all ? "" : arg);
        return answer_error("UNAVAILABLE", msg, false, NULL, 0, false);
    }
    return EXIT_OK;
}

static bool parse_prob(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0 && v <= 1.0)) {
        return false;
    }
    *out = v;
    return true;
}

/* "MIN-MAX" or "MS" in milliseconds. */
static bool parse_range(const char *s, unsigned *lo, unsigned *hi)
{
    char *end;
    errno = 0;
    unsigned long a = strtoul(s, &end, 10), b = a;
    if (errno || end == s || s[0] == '-') {
        return false;
    }
    if (*end == '-') {
        const char *t = end + 1;
        b = strtoul(t, &end, 10);
        if (errno || end == t || *t == '-') {
            return false;
        }
    }
    if (*end || a > b || b > 60000) {
        return false;
    }
    *lo = (unsigned)a;
    *hi = (unsigned)b;
    return true;
}

/* Parse SPEC words into f (target left alone). */
static int parse_spec(struct tok *t, int n, struct clerk_fault *f)
{
    char msg[200];
    for (int i = 0; i < n; i++) {
        const char *w = t[i].p;
        const char *eq = strchr(w, '=');
        const char *v = eq ? eq + 1 : "";
        size_t klen = eq ? (size_t)(eq - w) : strlen(w);
#define KEY(name) (klen == strlen(name) && !strncmp(w, name, klen))
        bool ok = true;
        if (!eq && !strcmp(w, "cut")) {
            f->cut = true;
        } else if (!eq && !strcmp(w, "none")) {
            /* nothing: removes the rule */
        } else if (!eq && !strcmp(w, "unreliable")) {
            f->drop_request = 0.1;
            f->drop_reply = 0.1;
            f->delay_min_ms = 0;
            f->delay_max_ms = 27;
        } else if (KEY("drop-request")) {
            ok = parse_prob(v, &f->drop_request);
        } else if (KEY("drop-reply")) {
            ok = parse_prob(v, &f->drop_reply);
        } else if (KEY("duplicate")) {
            ok = parse_prob(v, &f->duplicate);
        } else if (KEY("delay")) {
            ok = parse_range(v, &f->delay_min_ms, &f->delay_max_ms);
        } else if (KEY("reorder")) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            char *colon = strchr(buf, ':');
            if (colon) {
                *colon = 0;
                ok = parse_range(colon + 1, &f->reorder_min_ms,
                                 &f->reorder_max_ms) &&
                     f->reorder_max_ms > 0;
            }
            ok = ok && parse_prob(buf, &f->reorder);
        } else {
            snprintf(msg, sizeof msg,
                     "unknown fault '%.60s' (see kvctl help fault)", w);
            return usage_error(msg);
        }
#undef KEY
        if (!ok) {
            snprintf(msg, sizeof msg,
                     "bad value in '%.60s': probabilities are 0 to 1, "
                     "delays MS or MIN-MAX up to 60000",
                     w);
            return usage_error(msg);
        }
    }
    return EXIT_OK;
}

/* One node's rules as JSON. */
static json_t *json_rules(uint64_t node, const struct clerk_fault *r, size_t n)
{
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "id", ju64(node));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_object(), *counts = json_object();
        json_object_set_new(e, "target", ju64(r[i].target));
        json_object_set_new(e, "cut", json_boolean(r[i].cut));
        json_object_set_new(e, "drop_request", json_real(r[i].drop_request));
        json_object_set_new(e, "drop_reply", json_real(r[i].drop_reply));
        json_object_set_new(e, "delay_min_ms", ju64(r[i].delay_min_ms));
        json_object_set_new(e, "delay_max_ms", ju64(r[i].delay_max_ms));
        json_object_set_new(e, "duplicate", json_real(r[i].duplicate));
        json_object_set_new(e, "reorder", json_real(r[i].reorder));
        json_object_set_new(e, "reorder_min_ms", ju64(r[i].reorder_min_ms));
        json_object_set_new(e, "reorder_max_ms", ju64(r[i].reorder_max_ms));
        json_object_set_new(counts, "cut", ju64(r[i].n_cut));
        json_object_set_new(counts, "dropped_requests",
                            ju64(r[i].n_dropped_requests));
        json_object_set_new(counts, "dropped_replies",
                            ju64(r[i].n_dropped_replies));
        json_object_set_new(counts, "delayed", ju64(r[i].n_delayed));
        json_object_set_new(counts, "duplicated", ju64(r[i].n_duplicated));
        json_object_set_new(counts, "reordered", ju64(r[i].n_reordered));
        json_object_set_new(e, "counts", counts);
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "rules", arr);
    return o;
}

/* One node's rules in simple format. */
static void print_rules(uint64_t node, const struct clerk_fault *r, size_t n)
{
    if (n == 0) {
        printf("node=%llu no faults\n", (unsigned long long)node);
    }
    for (size_t i = 0; i < n; i++) {
        const struct clerk_fault *f = &r[i];
        printf("node=%llu target=", (unsigned long long)node);
        if (f->target == CLERK_FAULT_CLIENTS) {
            fputs("clients", stdout);
        } else {
            printf("%llu", (unsigned long long)f->target);
        }
        if (f->cut) {
            fputs(" cut", stdout);
        }
        if (f->drop_request > 0) {
            printf(" drop-request=%g", f->drop_request);
        }
        if (f->drop_reply > 0) {
            printf(" drop-reply=%g", f->drop_reply);
        }
        if (f->delay_max_ms > 0) {
            printf(" delay=%u-%u", f->delay_min_ms, f->delay_max_ms);
        }
        if (f->duplicate > 0) {
            printf(" duplicate=%g", f->duplicate);
        }
        if (f->reorder > 0) {
            printf(" reorder=%g:%u-%u", f->reorder, f->reorder_min_ms,
                   f->reorder_max_ms);
        }
        printf(
            " | cut_calls=%llu dropped_requests=%llu dropped_replies=%llu"
            " delayed=%llu duplicated=%llu reordered=%llu\n",
            (unsigned long long)f->n_cut,
            (unsigned long long)f->n_dropped_requests,
            (unsigned long long)f->n_dropped_replies,
            (unsigned long long)f->n_delayed,
            (unsigned long long)f->n_duplicated,
            (unsigned long long)f->n_reordered);
    }
}

/* The seed of a fault command's random choices: a word seed=N among
 * t[from..*n) (taken out of them), else one drawn from the clock. Never 0
 * (0 would let each node draw its own). */
static int take_seed(struct tok *t, int *n, int from, uint64_t *seed)
{
    *seed = 0;
    for (int i = from; i < *n; i++) {
        if (strncmp(t[i].p, "seed=", 5) != 0) {
            continue;
        }
        const char *v = t[i].p + 5;
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end || s == 0 || v[0] == '-') {
            return usage_error("seed=N needs a number above 0");
        }
        *seed = s;
        memmove(&t[i], &t[i + 1], (size_t)(*n - i - 1) * sizeof *t);
        (*n)--;
        i--;
    }
    if (!*seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
                ((uint64_t)getpid() << 32);
        *seed = *seed ? *seed : 1;
    }
    return EXIT_OK;
}

/* Node id's share of a command's seed: every node draws its own
 * sequence, all of them given by the one seed printed. */
static uint64_t node_seed(uint64_t seed, uint64_t id)
{
    uint64_t s = seed + id * 0x9E3779B97F4A7C15ull;
    return s ? s : 1;
}

/* Send each chosen node its rules (after clearing its old ones if asked)
 * and print the rules in force; stops at the first refusal. When rules
 * are set, the seed of their random choices is printed first (seed=N
 * on the command line repeats them). */
static int apply_rules(struct clerk *ck,
                       const struct node_rules *nodes,
                       size_t n_nodes,
                       bool clear,
                       uint64_t seed)
{
    bool first = true, any_rules = false;
    for (size_t i = 0; i < n_nodes; i++) {
        any_rules = any_rules || (nodes[i].chosen && nodes[i].n > 0);
    }
    json_t *answer = NULL, *arr = NULL;
    if (fmt == FMT_JSON) {
        answer = ok_object();
        if (any_rules) {
            json_object_set_new(answer, "seed", ju64(seed));
        }
        arr = json_array();
        json_object_set_new(answer, "nodes", arr);
    }
    for (size_t i = 0; i < n_nodes; i++) {
        const struct node_rules *nr = &nodes[i];
        if (!nr->chosen) {
            continue;
        }
        struct clerk_fault *now = NULL;
        size_t n_now = 0;
        int err = clerk_fault(ck, nr->server, clear, nr->rules, nr->n,
                              node_seed(seed, nr->id), &now, &n_now);
        if (err) {
            if (answer && !first) {
                emit(answer); /* the answer of the nodes already changed */
            } else {
                json_decref(answer);
            }
            /* A refusal by the first node is one error object, not an
             * "ok" answer with the error inside it. */
            return answer_clerk(ck, err);
        }
        if (arr) {
            json_array_append_new(arr, json_rules(nr->id, now, n_now));
        } else {
            if (first && any_rules) {
                printf("seed=%llu\n", (unsigned long long)seed);
            }
            print_rules(nr->id, now, n_now);
        }
        clerk_free(now);
        first = false;
    }
    if (answer) {
        emit(answer);
    }
    return EXIT_OK;
}

/* kvctl fault NODE show|clear|TARGET SPEC... */
static int cmd_fault(struct clerk *ck, struct tok *t, int n)
{
    if (n < 3) {
        return usage_error(
            "usage: kvctl fault NODE show|clear|TARGET SPEC... "
            "(see kvctl help fault)");
    }
    uint64_t seed;
    int rv = take_seed(t, &n, 3, &seed);
    if (rv != EXIT_OK) {
        return rv;
    }
    struct node_rules nodes[MAX_NODES];
    size_t n_nodes;
    rv = resolve_nodes(ck, t[1].p, nodes, &n_nodes);
    if (rv != EXIT_OK) {
        return rv;
    }
    const char *what = t[2].p;
    bool clear = !strcmp(what, "clear");
    bool show = !strcmp(what, "show");
    struct clerk_fault spec = {0};
    if ((clear || show) && n != 3) {
        return usage_error("usage: kvctl fault NODE show|clear");
    }
    if (!clear && !show) {
        if (n < 4) {
            return usage_error(
                "usage: kvctl fault NODE TARGET SPEC... (SPEC 'none' "
                "removes the rule)");
        }
        if ((rv = parse_spec(t + 3, n - 3, &spec)) != EXIT_OK) {
            return rv;
        }
    }
    bool clients = !strcmp(what, "clients") || !strcmp(what, "all");
    bool peers = !strcmp(what, "peers") || !strcmp(what, "all");
    uint64_t one = 0;
    if (!clear && !show && !clients && !peers) {
        char *end;
        errno = 0;
        one = strtoull(what, &end, 10);
        if (errno || end == what || *end || one == 0) {
            return usage_error("TARGET is a node id, clients, peers or all");
        }
    }
    for (size_t i = 0; i < n_nodes; i++) {
        struct node_rules *nr = &nodes[i];
        if (clients) {
            nr->rules[nr->n] = spec;
            nr->rules[nr->n++].target = CLERK_FAULT_CLIENTS;
        }
        for (size_t j = 0; peers && j < n_nodes; j++) {
            if (j != i) {
                nr->rules[nr->n] = spec;
                nr->rules[nr->n++].target = nodes[j].id;
            }
        }
        if (one && one != nr->id) { /* "fault all 3": not 3 to itself */
            nr->rules[nr->n] = spec;
            nr->rules[nr->n++].target = one;
        }
    }
    return apply_rules(ck, nodes, n_nodes, clear, seed);
}

/* kvctl partition GROUP GROUP...: each node reaches only its own group. */
static int cmd_partition(struct clerk *ck, struct tok *t, int n)
{
    uint64_t seed;
    int rv = take_seed(t, &n, 1, &seed);
    if (rv != EXIT_OK) {
        return rv;
    }
    if (n < 2) {
        return usage_error(
            "usage: kvctl partition IDS [IDS...] "
            "(e.g. kvctl partition 1,2 3)");
    }
    struct node_rules nodes[MAX_NODES];
    size_t n_nodes;
    rv = resolve_nodes(ck, "all", nodes, &n_nodes);
    if (rv != EXIT_OK) {
        return rv;
    }
    int group[MAX_NODES]; /* 0: not named, so alone */
    memset(group, 0, sizeof group);
    for (int g = 1; g < n; g++) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", t[g].p);
        char *save = NULL;
        for (char *s = strtok_r(buf, ",", &save); s;
             s = strtok_r(NULL, ",", &save)) {
            char *end;
            errno = 0;
            unsigned long long id = strtoull(s, &end, 10);
            size_t j = 0;
            while (j < n_nodes && nodes[j].id != id) {
                j++;
            }
            if (errno || end == s || *end || j == n_nodes) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "'%.40s' is not the id of a reachable node", s);
                return usage_error(msg);
            }
            if (group[j]) {
                return usage_error("a node is named in two groups");
            }
            group[j] = g;
        }
    }
    for (size_t i = 0; i < n_nodes; i++) {
        for (size_t j = 0; j < n_nodes; j++) {
            if (j != i && (group[i] == 0 || group[i] != group[j])) {
                nodes[i].rules[nodes[i].n++] =
                    (struct clerk_fault){.target = nodes[j].id, .cut = true};
            }
        }
    }
    /* Replace whatever cut the links before. */
    return apply_rules(ck, nodes, n_nodes, true, seed);
}

/* Help text: as it is, or in pipe mode one line (quoted with the
 * escapes of values, or {"ok":true,"help":TEXT}). */
static int print_help(const char *text)
{
    if (!pipe_mode) {
        fputs(text, stdout);
    } else if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "help", jcstr(text));
        emit(o);
    } else {
        put_quoted(stdout, (const unsigned char *)text, strlen(text));
        putchar('\n');
    }
    return EXIT_OK;
}

static int command_help(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!strcmp(commands[i].name, name)) {
            return print_help(commands[i].help);
        }
    }
    char msg[128];
    snprintf(msg, sizeof msg, "unknown command '%.60s' (see kvctl help)", name);
    return usage_error(msg);
}

/* ------------------------------------------------- users, roles, auth */

/* Read the first line of a file (without its newline) into out. */
static bool read_first_line(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    bool ok = fgets(out, (int)size, f) != NULL;
    fclose(f);
    if (!ok) {
        out[0] = 0; /* an empty file: an empty password */
        return true;
    }
    out[strcspn(out, "\r\n")] = 0;
    return true;
}

/* Ask for a password on the terminal without echo; false when standard
 * input is not a terminal. */
static bool prompt_password(const char *prompt, char *out, size_t size)
{
    if (!isatty(STDIN_FILENO)) {
        return false;
    }
    struct termios old, quiet;
    bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fputs(prompt, stderr);
    fflush(stderr);
    bool ok = fgets(out, (int)size, stdin) != NULL;
    if (restore) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    }
    fputc('\n', stderr);
    if (!ok) {
        return false;
    }
    out[strcspn(out, "\r\n")] = 0;
    return true;
}

/* The name and new password of `user add|passwd NAME[:PW] [--password-file
 * F]`: into name and pw; an exit code on failure. */
static int new_password(struct tok *t,
                        int n,
                        char *name,
                        size_t name_size,
                        char *pw,
                        size_t pw_size)
{
    const char *file = NULL;
    if (n == 5 && !strcmp(t[3].p, "--password-file")) {
        file = t[4].p;
    } else if (n != 3) {
        return usage_error(
            "usage: kvctl user add|passwd NAME[:PASSWORD] "
            "[--password-file FILE]");
    }
    const char *colon = strchr(t[2].p, ':');
    size_t nl = colon ? (size_t)(colon - t[2].p) : t[2].len;
    if (nl >= name_size) {
        return usage_error("the user name is too long");
    }
    memcpy(name, t[2].p, nl);
    name[nl] = 0;
    if (colon) {
        snprintf(pw, pw_size, "%s", colon + 1);
        return EXIT_OK;
    }
    if (file) {
        if (!read_first_line(file, pw, pw_size)) {
            char msg[300];
            snprintf(msg, sizeof msg, "--password-file %.200s: %s", file,
                     strerror(errno));
            return usage_error(msg);
        }
        return EXIT_OK;
    }
    char again[256];
    if (!prompt_password("New password: ", pw, pw_size) ||
        !prompt_password("Again: ", again, sizeof again)) {
        return usage_error(
            "no password: give NAME:PASSWORD or "
            "--password-file FILE (or run on a terminal)");
    }
    if (strcmp(pw, again) != 0) {
        return usage_error("the passwords do not match");
    }
    return EXIT_OK;
}

static json_t *json_names(char **names, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, jcstr(names[i]));
    }
    return arr;
}

/* Names: one per line (pipe mode: quoted, on one line). */
static void answer_names(const char *field, char **names, size_t n)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, field, json_names(names, n));
        emit(o);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (pipe_mode) {
            if (i) {
                putchar(' ');
            }
            put_quoted(stdout, (const unsigned char *)names[i],
                       strlen(names[i]));
        } else {
            puts(names[i]);
        }
    }
    if (pipe_mode) {
        putchar('\n');
    }
}

static int cmd_user(struct clerk *ck, struct tok *t, int n)
{
    const char *sub = n >= 2 ? t[1].p : "";
    int err;
    if (!strcmp(sub, "add") || !strcmp(sub, "passwd")) {
        char name[256], pw[256];
        int rv = new_password(t, n, name, sizeof name, pw, sizeof pw);
        if (rv != EXIT_OK) {
            return rv;
        }
        err = sub[0] == 'a' ? clerk_user_add(ck, name, pw)
                            : clerk_user_passwd(ck, name, pw);
        memset(pw, 0, sizeof pw);
    } else if (!strcmp(sub, "delete") && n == 3) {
        err = clerk_user_delete(ck, t[2].p);
    } else if ((!strcmp(sub, "grant-role") || !strcmp(sub, "revoke-role")) &&
               n == 4) {
        err = sub[0] == 'g' ? clerk_user_grant_role(ck, t[2].p, t[3].p)
                            : clerk_user_revoke_role(ck, t[2].p, t[3].p);
    } else if (!strcmp(sub, "get") && n == 3) {
        char **roles;
        size_t count;
        err = clerk_user_get(ck, t[2].p, &roles, &count);
        if (err) {
            return answer_clerk(ck, err);
        }
        if (fmt == FMT_JSON) {
            json_t *o = ok_object();
            json_object_set_new(o, "user", jstr(t[2].p, t[2].len));
            json_object_set_new(o, "roles", json_names(roles, count));
            emit(o);
        } else {
            printf("User: %s%sRoles:", t[2].p, pipe_mode ? " " : "\n");
            for (size_t i = 0; i < count; i++) {
                printf(" %s", roles[i]);
            }
            putchar('\n');
        }
        clerk_free(roles);
        return EXIT_OK;
    } else if (!strcmp(sub, "list") && n == 2) {
        char **names;
        size_t count;
        err = clerk_user_list(ck, &names, &count);
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_names("users", names, count);
        clerk_free(names);
        return EXIT_OK;
    } else {
        return usage_error(
            "usage: kvctl user add|passwd NAME[:PASSWORD] "
            "[--password-file F] | delete NAME | get NAME | "
            "list | grant-role USER ROLE | revoke-role USER "
            "ROLE");
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    answer_ok();
    return EXIT_OK;
}

static const char *perm_name(enum clerk_perm_type type)
{
    return type == CLERK_PERM_READ    ? "read"
           : type == CLERK_PERM_WRITE ? "write"
                                      : "readwrite";
}

static void print_role(const char *name,
                       const struct clerk_permission *p,
                       size_t count)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object(), *arr = json_array();
        json_object_set_new(o, "role", jcstr(name));
        for (size_t i = 0; i < count; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "type", jcstr(perm_name(p[i].type)));
            json_object_set_new(e, "key", jstr(p[i].key, p[i].key_len));
            json_object_set_new(e, "range_end",
                                jstr(p[i].range_end, p[i].range_end_len));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "permissions", arr);
        emit(o);
        return;
    }
    printf("Role: %s%s", name, pipe_mode ? "" : "\n");
    for (size_t i = 0; i < count; i++) {
        printf(pipe_mode ? " %s " : "  %s ", perm_name(p[i].type));
        put_quoted(stdout, p[i].key, p[i].key_len);
        if (p[i].range_end_len == 1 && ((char *)p[i].range_end)[0] == 0) {
            fputs(" and every key after it", stdout);
        } else if (p[i].range_end_len) {
            fputs(" up to ", stdout);
            put_quoted(stdout, p[i].range_end, p[i].range_end_len);
        }
        if (!pipe_mode) {
            putchar('\n');
        }
    }
    if (pipe_mode || count == 0) {
        putchar('\n');
    }
}

/* [--prefix|--from-key] ROLE [TYPE] KEY [END]: the range of a permission
 * command; end points into buf when made here. */
static int cmd_role_permission(struct clerk *ck,
                               struct tok *t,
                               int n,
                               bool grant)
{
    int k = 2;
    bool prefix = false, from_key = false;
    if (k < n && !strcmp(t[k].p, "--prefix")) {
        prefix = true;
        k++;
    } else if (k < n && !strcmp(t[k].p, "--from-key")) {
        from_key = true;
        k++;
    }
    int want = grant ? 3 : 2; /* ROLE [TYPE] KEY */
    int left = n - k;
    if (left < want || left > want + 1 ||
        ((prefix || from_key) && left != want)) {
        return usage_error(
            grant ? "usage: kvctl role grant-permission [--prefix|--from-key] "
                    "ROLE read|write|readwrite KEY [END]"
                  : "usage: kvctl role revoke-permission [--prefix|--from-key] "
                    "ROLE KEY [END]");
    }
    const char *role = t[k].p;
    enum clerk_perm_type type = CLERK_PERM_READ;
    if (grant) {
        const char *ty = t[k + 1].p;
        if (!strcmp(ty, "read")) {
            type = CLERK_PERM_READ;
        } else if (!strcmp(ty, "write")) {
            type = CLERK_PERM_WRITE;
        } else if (!strcmp(ty, "readwrite")) {
            type = CLERK_PERM_READWRITE;
        } else {
            return usage_error(
                "the permission type is read, write or "
                "readwrite");
        }
    }
    struct tok *key = &t[k + want - 1];
    const void *end = NULL;
    size_t end_len = 0;
    uint8_t buf[1024];
    if (prefix) {
        if (key->len > sizeof buf) {
            return usage_error("the prefix is too long");
        }
        end_len = clerk_prefix_end(key->p, key->len, buf);
        end = buf;
    } else if (from_key) {
        end = "";
        end_len = 1; /* "\0": every key from KEY on */
    } else if (left == want + 1) {
        end = t[k + want].p;
        end_len = t[k + want].len;
    }
    if (key->len == 0) {
        return usage_error("the key is empty");
    }
    int err = grant ? clerk_role_grant_permission(ck, role, type, key->p,
                                                  key->len, end, end_len)
                    : clerk_role_revoke_permission(ck, role, key->p, key->len,
                                                   end, end_len);
    if (err) {
        return answer_clerk(ck, err);
    }
    answer_ok();
    return EXIT_OK;
}

static int cmd_role(struct clerk *ck, struct tok *t, int n)
{
    const char *sub = n >= 2 ? t[1].p : "";
    int err;
    if (!strcmp(sub, "add") && n == 3) {
        err = clerk_role_add(ck, t[2].p);
    } else if (!strcmp(sub, "delete") && n == 3) {
        err = clerk_role_delete(ck, t[2].p);
    } else if (!strcmp(sub, "grant-permission") ||
               !strcmp(sub, "revoke-permission")) {
        return cmd_role_permission(ck, t, n, sub[0] == 'g');
    } else if (!strcmp(sub, "get") && n == 3) {
        struct clerk_permission *perms;
        size_t count;
        err = clerk_role_get(ck, t[2].p, &perms, &count);
        if (err) {
            return answer_clerk(ck, err);
        }
        print_role(t[2].p, perms, count);
        clerk_free(perms);
        return EXIT_OK;
    } else if (!strcmp(sub, "list") && n == 2) {
        char **names;
        size_t count;
        err = clerk_role_list(ck, &names, &count);
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_names("roles", names, count);
        clerk_free(names);
        return EXIT_OK;
    } else {
        return usage_error(
            "usage: kvctl role add|delete|get NAME | list | "
            "grant-permission ... | revoke-permission ... "
            "(see kvctl help role)");
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    answer_ok();
    return EXIT_OK;
}

static int cmd_auth(struct clerk *ck, struct tok *t, int n)
{
    const char *sub = n == 2 ? t[1].p : "";
    int err;
    if (!strcmp(sub, "enable")) {
        err = clerk_auth_enable(ck);
    } else if (!strcmp(sub, "disable")) {
        err = clerk_auth_disable(ck);
    } else if (!strcmp(sub, "status")) {
        bool enabled;
        uint64_t rev = 0;
        err = clerk_auth_status(ck, &enabled, &rev);
        if (err) {
            return answer_clerk(ck, err);
        }
        if (fmt == FMT_JSON) {
            json_t *o = ok_object();
            json_object_set_new(o, "enabled", json_boolean(enabled));
            json_object_set_new(o, "revision", ju64(rev));
            emit(o);
        } else {
            printf("Authentication Status: %s%sAuthRevision: %llu\n",
                   enabled ? "true" : "false", pipe_mode ? " " : "\n",
                   (unsigned long long)rev);
        }
        return EXIT_OK;
    } else {
        return usage_error("usage: kvctl auth enable|disable|status");
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    answer_ok();
    return EXIT_OK;
}

/* --------------------------------------------------------- data model */

/* The header etcd puts on every answer: the store's revision. */
static json_t *json_header(uint64_t revision)
{
    json_t *h = json_object();
    json_object_set_new(h, "revision", ju64(revision));
    return h;
}

/* A key as etcd's JSON gives it: key and value in base64. */
static json_t *json_kv(const struct clerk_kv *kv)
{
    json_t *o = json_object();
    json_object_set_new(o, "key", jb64(kv->key, kv->key_len));
    json_object_set_new(o, "create_revision", ju64(kv->create_revision));
    json_object_set_new(o, "mod_revision", ju64(kv->mod_revision));
    json_object_set_new(o, "version", ju64(kv->version));
    json_object_set_new(o, "value", jb64(kv->value, kv->value_len));
    if (kv->lease) {
        json_object_set_new(o, "lease", ju64(kv->lease));
    }
    return o;
}

static json_t *json_kvs(const struct clerk_kv *kvs, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, json_kv(&kvs[i]));
    }
    return arr;
}

/* Bytes of an answer in simple format: raw on a line of their own, or
 * quoted and followed by a blank in pipe mode (one line per answer). */
static void put_field(const void *p, size_t n)
{
    if (pipe_mode) {
        put_quoted(stdout, p, n);
        putchar(' ');
    } else {
        fwrite(p, 1, n, stdout);
        putchar('\n');
    }
}

/* What get prints of each key. */
struct kv_print
{
    bool keys_only, value_only, rev_info;
    bool raw; /* the value's bytes alone, no newline (one-shot, one key) */
};

static void print_kv(const struct clerk_kv *kv, const struct kv_print *pr)
{
    if (fmt == FMT_TABLE) {
        put_quoted(stdout, kv->key, kv->key_len);
        putchar('\t');
        put_quoted(stdout, kv->value, kv->value_len);
        printf("\t%llu\t%llu\t%llu\n", (unsigned long long)kv->create_revision,
               (unsigned long long)kv->mod_revision,
               (unsigned long long)kv->version);
        return;
    }
    if (pr->raw && !pipe_mode) {
        fwrite(kv->value, 1, kv->value_len, stdout);
        return;
    }
    if (!pr->value_only) {
        put_field(kv->key, kv->key_len);
    }
    if (!pr->keys_only) {
        put_field(kv->value, kv->value_len);
    }
    if (pr->rev_info) {
        printf("create_revision=%llu mod_revision=%llu version=%llu%c",
               (unsigned long long)kv->create_revision,
               (unsigned long long)kv->mod_revision,
               (unsigned long long)kv->version, pipe_mode ? ' ' : '\n');
    }
}

/* End the one line of a pipe-mode answer. */
static void end_answer(void)
{
    if (pipe_mode) {
        putchar('\n');
    }
}

/* kvctl get with a range or options: every page of the range. */
static int cmd_get_range(struct clerk *ck, struct range_spec *s)
{
    struct kv_print pr = {.keys_only = (s->flags & CLERK_RANGE_KEYS_ONLY) != 0,
                          .value_only = s->print_value_only,
                          .rev_info = s->rev_info};
    pr.raw = s->print_value_only && !s->ranged && !s->rev_info &&
             !(s->flags & (CLERK_RANGE_KEYS_ONLY | CLERK_RANGE_COUNT_ONLY));
    bool descend = (s->flags & CLERK_RANGE_SORT_DESCEND) != 0;
    const void *key = s->key.p, *end = s->end;
    size_t key_len = s->key.len, end_len = s->end_len;
    uint64_t left = s->limit, revision = 0, count = 0;
    bool more = false, first = true;
    char *next = NULL; /* the key a next page starts from (or ends at) */
    json_t *answer = fmt == FMT_JSON ? ok_object() : NULL;
    json_t *kvs = answer ? json_array() : NULL;
    if (fmt == FMT_TABLE) {
        puts("KEY\tVALUE\tCREATE_REVISION\tMOD_REVISION\tVERSION");
    }
    /* The count of the whole range is shown with -w json, --rev-info and
     * --count-only: only the first page counts (the server walks the
     * rest of the range to count it). */
    bool counted =
        fmt == FMT_JSON || s->rev_info || (s->flags & CLERK_RANGE_COUNT_ONLY);
    for (;;) {
        struct clerk_range_result *r;
        unsigned flags = s->flags;
        if (!first || !counted) {
            flags |= CLERK_RANGE_NO_COUNT;
        }
        int err = clerk_range(ck, key, key_len, end, end_len, left, flags, &r);
        if (err) {
            free(next);
            json_decref(answer);
            json_decref(kvs);
            if (!first && fmt != FMT_JSON) {
                end_answer();
            }
            return answer_clerk(ck, err);
        }
        if (first) {
            revision = r->revision;
            count = r->count;
        }
        first = false;
        for (size_t i = 0; i < r->n_kvs; i++) {
            if (kvs) {
                json_array_append_new(kvs, json_kv(&r->kvs[i]));
            } else if (!(s->flags & CLERK_RANGE_COUNT_ONLY)) {
                print_kv(&r->kvs[i], &pr);
            }
        }
        if (left) {
            left = left > r->n_kvs ? left - r->n_kvs : 0;
        }
        more = r->more;
        /* Cut by the reply's size bound, not by the limit: go on from
         * the last key (ascending: that key + "\0"; descending: up to
         * it). */
        bool cut = r->more && r->n_kvs > 0 && (s->limit == 0 || left > 0) &&
                   !(s->flags & CLERK_RANGE_COUNT_ONLY) && s->ranged;
        if (cut) {
            const struct clerk_kv *last = &r->kvs[r->n_kvs - 1];
            free(next);
            next = malloc(last->key_len + 1);
            if (!next) {
                clerk_range_result_free(r);
                json_decref(answer);
                json_decref(kvs);
                return answer_error("NO_MEMORY", "out of memory", false, NULL,
                                    0, false);
            }
            memcpy(next, last->key, last->key_len);
            next[last->key_len] = 0;
            if (descend) {
                end = next;
                end_len = last->key_len;
            } else {
                key = next;
                key_len = last->key_len + 1;
            }
        }
        clerk_range_result_free(r);
        if (!cut) {
            break;
        }
    }
    free(next);
    if (answer) {
        json_object_set_new(answer, "header", json_header(revision));
        json_object_set_new(answer, "kvs", kvs);
        json_object_set_new(answer, "count", ju64(count));
        json_object_set_new(answer, "more", json_boolean(more));
        emit(answer);
        return EXIT_OK;
    }
    if (s->flags & CLERK_RANGE_COUNT_ONLY) {
        printf("%llu%c", (unsigned long long)count, pipe_mode ? ' ' : '\n');
    }
    if (s->rev_info) {
        printf("revision=%llu count=%llu more=%s%c",
               (unsigned long long)revision, (unsigned long long)count,
               more ? "true" : "false", pipe_mode ? ' ' : '\n');
    }
    end_answer();
    return EXIT_OK;
}

/* kvctl put with --prev-kv or --ignore-value. */
static int cmd_put_ex(struct clerk *ck, struct range_spec *s)
{
    struct clerk_put_result *r;
    int err = clerk_put_lease(ck, s->key.p, s->key.len, s->value.p,
                              s->value.len, s->lease, s->flags, &r);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "header", json_header(r->revision));
        if (r->prev_kv) {
            json_object_set_new(o, "prev_kv", json_kv(r->prev_kv));
        }
        emit(o);
    } else {
        fputs(pipe_mode ? "OK " : "OK\n", stdout);
        if (r->prev_kv) {
            put_field(r->prev_kv->key, r->prev_kv->key_len);
            put_field(r->prev_kv->value, r->prev_kv->value_len);
        }
        end_answer();
    }
    clerk_put_result_free(r);
    return EXIT_OK;
}

/* kvctl put KEY - | --file F: the value read first (before the cluster
 * is asked), then put as any other. */
static int cmd_put_read(struct clerk *ck, struct range_spec *s)
{
    if (s->value_stdin && pipe_mode) {
        return usage_error(
            "put KEY -: in pipe mode standard input holds the commands; "
            "give the value on the line or with --file F");
    }
    FILE *f = s->value_file ? fopen(s->value_file, "rb") : stdin;
    if (!f) {
        return io_error("put --file: cannot open", s->value_file, errno);
    }
    size_t len;
    char *v = read_all(f, &len);
    int e = errno;
    if (f != stdin) {
        fclose(f);
    }
    if (!v) {
        return io_error("put: cannot read",
                        s->value_file ? s->value_file : "standard input", e);
    }
    s->value = (struct tok){v, len};
    int rv = cmd_put_ex(ck, s);
    free(v);
    return rv;
}

#define DEL_PIECE 1000 /* keys per write of a delete in pieces */

/* Delete a range too large for one write (TOO_MANY_KEYS) in pieces of
 * DEL_PIECE keys (fewer, if the leader allows fewer), each a write of its
 * own: *r becomes the last piece's result with the total deleted. */
static int del_in_pieces(struct clerk *ck,
                         const struct range_spec *s,
                         struct clerk_delete_result **r)
{
    uint64_t total = 0, piece = DEL_PIECE;
    *r = NULL;
    fprintf(stderr,
            "kvctl: the range holds more keys than one write may delete: "
            "deleting it in pieces (not at one revision)\n");
    for (;;) {
        clerk_delete_result_free(*r);
        int err = clerk_delete_range_limit(ck, s->key.p, s->key.len, s->end,
                                           s->end_len, piece, 0, r);
        if (err == CLERK_TOO_MANY_KEYS && piece > 1) {
            piece = piece / 4 ? piece / 4 : 1; /* the leader allows fewer */
            continue;
        }
        if (err) {
            if (total) {
                fprintf(stderr, "kvctl: %llu keys were deleted before this\n",
                        (unsigned long long)total);
            }
            return err;
        }
        total += (*r)->deleted;
        if (!(*r)->more) {
            (*r)->deleted = total;
            return CLERK_OK;
        }
    }
}

/* kvctl del with a range or --prev-kv: the number deleted, then the
 * deleted keys. */
static int cmd_del_range(struct clerk *ck, struct range_spec *s)
{
    struct clerk_delete_result *r;
    int err = clerk_delete_range(ck, s->key.p, s->key.len, s->end, s->end_len,
                                 s->flags, &r);
    if (err == CLERK_TOO_MANY_KEYS && !(s->flags & CLERK_DELETE_PREV_KV)) {
        err = del_in_pieces(ck, s, &r);
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "header", json_header(r->revision));
        json_object_set_new(o, "deleted", ju64(r->deleted));
        if (s->flags & CLERK_DELETE_PREV_KV) {
            json_object_set_new(o, "prev_kvs",
                                json_kvs(r->prev_kvs, r->n_prev_kvs));
        }
        emit(o);
    } else {
        printf("%llu%c", (unsigned long long)r->deleted,
               pipe_mode ? ' ' : '\n');
        struct kv_print pr = {0};
        for (size_t i = 0; i < r->n_prev_kvs; i++) {
            print_kv(&r->prev_kvs[i], &pr);
        }
        end_answer();
    }
    clerk_delete_result_free(r);
    return EXIT_OK;
}

/* A transaction's responses as JSON (etcd's names). */
static json_t *json_txn(const struct clerk_txn_result *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_responses; i++) {
        const struct clerk_txn_response *o = &r->responses[i];
        json_t *e = json_object(), *v = json_object();
        const char *name = "response_range";
        switch (o->type) {
            case CLERK_OP_RANGE:
                json_object_set_new(v, "kvs",
                                    json_kvs(o->range->kvs, o->range->n_kvs));
                json_object_set_new(v, "count", ju64(o->range->count));
                json_object_set_new(v, "more", json_boolean(o->range->more));
                break;
            case CLERK_OP_PUT:
                name = "response_put";
                if (o->put->prev_kv) {
                    json_object_set_new(v, "prev_kv", json_kv(o->put->prev_kv));
                }
                break;
            case CLERK_OP_DELETE:
                name = "response_delete_range";
                json_object_set_new(v, "deleted", ju64(o->del->deleted));
                json_object_set_new(
                    v, "prev_kvs",
                    json_kvs(o->del->prev_kvs, o->del->n_prev_kvs));
                break;
            case CLERK_OP_TXN:
                name = "response_txn";
                json_object_set_new(v, "succeeded",
                                    json_boolean(o->txn->succeeded));
                json_object_set_new(v, "responses", json_txn(o->txn));
                break;
        }
        json_object_set_new(e, name, v);
        json_array_append_new(arr, e);
    }
    return arr;
}

/* A transaction's answer in simple format, as etcdctl prints it:
 * SUCCESS or FAILURE, then each response after an empty line. */
static void print_txn(const struct clerk_txn_result *r)
{
    fputs(r->succeeded ? "SUCCESS" : "FAILURE", stdout);
    putchar(pipe_mode ? ' ' : '\n');
    struct kv_print pr = {0};
    for (size_t i = 0; i < r->n_responses; i++) {
        const struct clerk_txn_response *o = &r->responses[i];
        if (!pipe_mode) {
            putchar('\n');
        }
        switch (o->type) {
            case CLERK_OP_RANGE:
                for (size_t k = 0; k < o->range->n_kvs; k++) {
                    print_kv(&o->range->kvs[k], &pr);
                }
                break;
            case CLERK_OP_PUT:
                fputs(pipe_mode ? "OK " : "OK\n", stdout);
                if (o->put->prev_kv) {
                    print_kv(o->put->prev_kv, &pr);
                }
                break;
            case CLERK_OP_DELETE:
                printf("%llu%c", (unsigned long long)o->del->deleted,
                       pipe_mode ? ' ' : '\n');
                for (size_t k = 0; k < o->del->n_prev_kvs; k++) {
                    print_kv(&o->del->prev_kvs[k], &pr);
                }
                break;
            case CLERK_OP_TXN:
                print_txn(o->txn);
                break;
        }
    }
}

/* The whole of standard input, NUL-terminated. */
static char *read_stdin(void)
{
    size_t len;
    return read_all(stdin, &len);
}

/* Read a transaction's text form on a terminal, with prompts. */
static char *read_txn_interactive(void)
{
    static const char *const prompts[] = {
        "compares:\n", "success requests (get, put, del):\n",
        "failure requests (get, put, del):\n"};
    size_t len = 0;
    char *buf = NULL, *line = NULL;
    size_t cap = 0;
    for (int section = 0; section < 3; section++) {
        fputs(prompts[section], stderr);
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) > 0) {
            char *p = realloc(buf, len + (size_t)n + 2);
            if (!p) {
                free(buf);
                free(line);
                return NULL;
            }
            buf = p;
            memcpy(buf + len, line, (size_t)n);
            len += (size_t)n;
            buf[len] = 0;
            if (line[0] == '\n') {
                break;
            }
        }
        if (n <= 0) {
            break;
        }
        if (section < 2) {
            fputc('\n', stderr);
        }
    }
    free(line);
    if (!buf) {
        buf = calloc(1, 1);
    }
    return buf;
}

/* kvctl txn [-i|--interactive] [--json-input]: a transaction from
 * standard input. */
static int cmd_txn(struct clerk *ck, struct tok *t, int n)
{
    bool json = false, interactive = false;
    for (int i = 1; i < n; i++) {
        if (!strcmp(t[i].p, "--json-input")) {
            json = true;
        } else if (!strcmp(t[i].p, "-i") || !strcmp(t[i].p, "--interactive")) {
            interactive = true;
        } else {
            return usage_error(
                "usage: kvctl txn [-i|--interactive] "
                "[--json-input] < TXN");
        }
    }
    if (pipe_mode) {
        return usage_error(
            "txn reads the transaction from standard input: run it as a "
            "command of its own");
    }
    char *text = interactive && isatty(STDIN_FILENO) ? read_txn_interactive()
                                                     : read_stdin();
    if (!text) {
        return answer_error("NO_MEMORY", "out of memory", false, NULL, 0,
                            false);
    }
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
        p++;
    }
    json = json || *p == '{';
    struct clerk_txn *txn;
    char why[300];
    bool ok = json ? kvctl_txn_parse_json(text, &txn, why, sizeof why)
                   : kvctl_txn_parse_text(text, &txn, why, sizeof why);
    free(text);
    if (!ok) {
        return usage_error(why);
    }
    struct clerk_txn_result *r;
    int err = clerk_txn_commit(ck, txn, &r);
    clerk_txn_free(txn);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "header", json_header(r->revision));
        json_object_set_new(o, "succeeded", json_boolean(r->succeeded));
        json_object_set_new(o, "responses", json_txn(r));
        emit(o);
    } else {
        print_txn(r);
        end_answer();
    }
    clerk_txn_result_free(r);
    return EXIT_OK;
}

/* A COMPACTED answer, with where the history starts now. */
static int answer_compacted(struct clerk *ck, uint64_t compact_revision)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "%s (the history is kept after revision %llu: start at %llu or "
             "later)",
             clerk_errmsg(ck)[0] ? clerk_errmsg(ck) : "compacted",
             (unsigned long long)compact_revision,
             (unsigned long long)compact_revision + 1);
    return answer_error("COMPACTED", msg, false, NULL, 0, false);
}

/* kvctl compact REV */
static int cmd_compact(struct clerk *ck, struct tok *t, int n)
{
    char *end;
    errno = 0;
    unsigned long long rev = n == 2 ? strtoull(t[1].p, &end, 10) : 0;
    if (n != 2 || errno || end == t[1].p || *end || t[1].p[0] == '-' ||
        rev == 0) {
        return usage_error("usage: kvctl compact REVISION (a number above 0)");
    }
    uint64_t compacted = 0;
    int err = clerk_compact(ck, rev, &compacted);
    if (err == CLERK_COMPACTED) {
        return answer_compacted(ck, compacted);
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "compact_revision", ju64(compacted));
        emit(o);
    } else {
        printf("compacted revision %llu\n", (unsigned long long)compacted);
    }
    return EXIT_OK;
}

/* kvctl events [KEY [END]] [--prefix|--from-key] --rev N [--limit N] */
static int cmd_events(struct clerk *ck, struct tok *t, int n)
{
    static const char use[] =
        "usage: kvctl events [KEY [END]] [--prefix|--from-key] --rev N "
        "[--limit N]";
    struct tok args[MAX_TOKENS + 2];
    int m = 0;
    uint64_t rev = 0;
    bool positional = false, rev_given = false;
    for (int i = 1; i < n; i++) {
        if (!strcmp(t[i].p, "--rev") || !strncmp(t[i].p, "--rev=", 6)) {
            const char *v = t[i].p[5] == '=' ? t[i].p + 6
                            : i + 1 < n      ? t[++i].p
                                             : "";
            char *end;
            errno = 0;
            rev = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                return usage_error(use);
            }
            rev_given = true;
            continue;
        }
        positional |= t[i].p[0] != '-';
        if (!strcmp(t[i].p, "--limit") && i + 1 < n) {
            args[m++] = t[i++];
        }
        args[m++] = t[i];
    }
    if (!rev_given) {
        return usage_error(use);
    }
    if (!positional) { /* every key: "\0" on */
        args[m++] = (struct tok){(char *)"", 1};
        args[m++] = (struct tok){(char *)"--from-key", 10};
    }
    struct range_spec s;
    char why[300];
    if (!kvctl_parse_spec(SPEC_GET, args, m, &s, why, sizeof why)) {
        return usage_error(why);
    }
    uint64_t left = s.limit, start = rev, revision = 0, compacted = 0;
    json_t *answer = fmt == FMT_JSON ? ok_object() : NULL;
    json_t *events = answer ? json_array() : NULL;
    bool first = true;
    for (;;) {
        struct clerk_events_result *r;
        int err = clerk_events(ck, start, s.key.p, s.key.len, s.end, s.end_len,
                               left, &r);
        if (err) {
            uint64_t c = r ? r->compact_revision : 0;
            clerk_events_result_free(r);
            json_decref(answer);
            json_decref(events);
            if (!first && !answer) {
                end_answer();
            }
            return err == CLERK_COMPACTED ? answer_compacted(ck, c)
                                          : answer_clerk(ck, err);
        }
        first = false;
        revision = r->revision;
        compacted = r->compact_revision;
        for (size_t i = 0; i < r->n_events; i++) {
            const struct clerk_event *e = &r->events[i];
            const char *type = e->type == CLERK_EVENT_PUT ? "PUT" : "DELETE";
            if (events) {
                json_t *o = json_object();
                json_object_set_new(o, "type", json_string(type));
                json_object_set_new(o, "kv", json_kv(&e->kv));
                json_array_append_new(events, o);
                continue;
            }
            printf("%s%c", type, pipe_mode ? ' ' : '\n');
            put_field(e->kv.key, e->kv.key_len);
            if (e->type == CLERK_EVENT_PUT) {
                put_field(e->kv.value, e->kv.value_len);
            }
        }
        if (left) {
            left = left > r->n_events ? left - r->n_events : 0;
        }
        bool again =
            r->more && r->next_revision > start && (s.limit == 0 || left > 0);
        start = r->next_revision;
        clerk_events_result_free(r);
        if (!again) {
            break;
        }
    }
    if (answer) {
        json_object_set_new(answer, "header", json_header(revision));
        json_object_set_new(answer, "compact_revision", ju64(compacted));
        json_object_set_new(answer, "next_revision", ju64(start));
        json_object_set_new(answer, "events", events);
        emit(answer);
    } else {
        end_answer();
    }
    return EXIT_OK;
}

/* Set by SIGINT and SIGTERM in watch, lease keep-alive, lock and elect:
 * they stop, clean up and exit. */
static volatile sig_atomic_t interrupted; /* SIGINT or SIGTERM came */

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Put back the handlers a command replaced, unless it was interrupted:
 * kvctl exits then, and a second signal on the way (timeout(1) sends one
 * to kvctl and one to its process group; a Ctrl-C pressed twice) must not
 * kill it with the default action between here and its clean exit. */
static void restore_interrupt(const struct sigaction *old_int,
                              const struct sigaction *old_term)
{
    if (!interrupted) {
        sigaction(SIGINT, old_int, NULL);
        sigaction(SIGTERM, old_term, NULL);
    }
}

/* A number option's value: --name N or --name=N. */
static bool num_option(struct tok *t,
                       int n,
                       int *i,
                       const char *name,
                       uint64_t *out,
                       bool *bad)
{
    size_t len = strlen(name);
    if (strncmp(t[*i].p, name, len) != 0 ||
        (t[*i].p[len] != 0 && t[*i].p[len] != '=')) {
        return false;
    }
    const char *v = t[*i].p[len] == '=' ? t[*i].p + len + 1
                    : *i + 1 < n        ? t[++*i].p
                                        : "";
    char *end;
    errno = 0;
    *out = strtoull(v, &end, 10);
    *bad = errno || end == v || *end || v[0] == '-';
    return true;
}

/* kvctl watch KEY [END] [--prefix|--from-key] [--rev N] [--count N]
 *   [--progress-ms N] [--require-leader] */
static int cmd_watch(struct clerk *ck, struct tok *t, int n)
{
    static const char use[] =
        "usage: kvctl watch KEY [END] [--prefix|--from-key] [--rev N] "
        "[--count N] [--progress-ms N] [--require-leader] [--prev-kv]";
    struct tok args[MAX_TOKENS + 2];
    int m = 0;
    uint64_t rev = 0, count = 0, progress = 0;
    struct clerk_watch_options o = {0};
    for (int i = 1; i < n; i++) {
        bool bad = false;
        if (num_option(t, n, &i, "--rev", &rev, &bad) ||
            num_option(t, n, &i, "--count", &count, &bad) ||
            num_option(t, n, &i, "--progress-ms", &progress, &bad)) {
            if (bad) {
                return usage_error(use);
            }
            continue;
        }
        if (!strcmp(t[i].p, "--require-leader")) {
            o.require_leader = true;
            continue;
        }
        if (!strcmp(t[i].p, "--prev-kv")) {
            o.prev_kv = true;
            continue;
        }
        args[m++] = t[i];
    }
    struct range_spec s;
    char why[300];
    if (m == 0) {
        return usage_error(use);
    }
    if (!kvctl_parse_spec(SPEC_GET, args, m, &s, why, sizeof why)) {
        return usage_error(why);
    }
    if (s.limit || s.flags || s.print_value_only || s.rev_info) {
        return usage_error(use);
    }
    if (progress > 3600000) {
        return usage_error("--progress-ms: at most 3600000");
    }
    if (pipe_mode && count == 0) {
        return usage_error(
            "watch runs until interrupted: in pipe mode give --count N");
    }
    o.start_revision = rev;
    o.progress_ms = (unsigned)progress;
    struct clerk_watch *w;
    int err =
        clerk_watch_open(ck, s.key.p, s.key.len, s.end, s.end_len, &o, &w);
    if (err == CLERK_COMPACTED) {
        return answer_error("COMPACTED", clerk_errmsg(ck), false, NULL, 0,
                            false);
    }
    if (err) {
        return answer_clerk(ck, err);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    uint64_t seen = 0;
    int rv = EXIT_OK;
    interrupted = 0;
    while (!interrupted && (!count || seen < count)) {
        struct clerk_events_result *r;
        err = clerk_watch_next(w, 200, &r);
        if (err == CLERK_TIMEOUT) {
            continue;
        }
        if (err) {
            const char *msg = clerk_watch_errmsg(w);
            rv = answer_error(clerk_error_code(err),
                              msg[0] ? msg : clerk_strerror(err), false, NULL,
                              0, false);
            break;
        }
        if (!r->n_events && progress) {
            if (fmt == FMT_JSON) {
                json_t *p = ok_object();
                json_object_set_new(p, "progress", json_true());
                json_object_set_new(p, "revision", ju64(r->revision));
                emit(p);
            } else {
                printf("PROGRESS %llu\n", (unsigned long long)r->revision);
            }
        }
        for (size_t i = 0; i < r->n_events && (!count || seen < count); i++) {
            const struct clerk_event *e = &r->events[i];
            const char *type = e->type == CLERK_EVENT_PUT ? "PUT" : "DELETE";
            const struct clerk_prev_kv *pk =
                r->prev_kvs ? &r->prev_kvs[i] : NULL;
            seen++;
            if (fmt == FMT_JSON) {
                json_t *j = ok_object();
                json_object_set_new(j, "type", json_string(type));
                json_object_set_new(j, "revision", ju64(e->kv.mod_revision));
                json_object_set_new(j, "kv", json_kv(&e->kv));
                if (pk && pk->known) {
                    json_object_set_new(j, "prev_kv", json_kv(&pk->kv));
                } else if (pk && pk->missing) {
                    json_object_set_new(j, "prev_kv_compacted", json_true());
                }
                emit(j);
                continue;
            }
            printf("%s %llu ", type, (unsigned long long)e->kv.mod_revision);
            put_quoted(stdout, e->kv.key, e->kv.key_len);
            if (e->type == CLERK_EVENT_PUT) {
                putchar(' ');
                put_quoted(stdout, e->kv.value, e->kv.value_len);
            }
            if (pk && pk->known) {
                fputs(" prev ", stdout);
                put_quoted(stdout, pk->kv.value, pk->kv.value_len);
            } else if (pk && pk->missing) {
                fputs(" prev-compacted", stdout);
            }
            putchar('\n');
        }
        clerk_events_result_free(r);
        fflush(stdout);
    }
    fflush(stdout);
    clerk_watch_close(w);
    return rv;
}

/* --------------------------------------------------------------- leases */

/* Print a lease answer: "lease ID <text>" or its JSON members. */
static void answer_lease(uint64_t id, json_t *members, const char *text)
{
    if (fmt == FMT_JSON) {
        json_t *o = ok_object();
        json_object_set_new(o, "id", ju64(id));
        json_object_update(o, members);
        json_decref(members);
        emit(o);
    } else {
        json_decref(members);
        printf("lease %016llx %s\n", (unsigned long long)id, text);
    }
}

static bool was_interrupted(void *arg)
{
    (void)arg;
    return interrupted != 0;
}

/* kvctl lease keep-alive ID [--once]: renew every TTL/3 until interrupted,
 * over one keep-alive stream to the leader (a new one when the leader
 * changes); the lease counts as lost a TTL after the last good renewal
 * was sent. */
static int lease_keepalive(struct clerk *ck, uint64_t id, bool once)
{
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    interrupted = 0;
    struct ck_keepalive *ka = NULL;
    int rv = ck_keepalive_open(ck, id, was_interrupted, NULL, &ka);
    if (rv != CLERK_OK) {
        rv = answer_clerk(ck, rv);
        goto out_restore_signals;
    }
    rv = EXIT_OK;
    uint64_t last_ok = 0, ttl_ms = 0;
    while (!interrupted) {
        uint64_t now = ck_now_ms();
        unsigned budget = ck_deadline_ms(ck);
        if (last_ok) {
            budget =
                last_ok + ttl_ms > now ? (unsigned)(last_ok + ttl_ms - now) : 1;
        }
        int64_t ttl = 0;
        uint64_t sent = now;
        int err = ck_keepalive_renew(ka, budget, &ttl, &sent);
        if (interrupted) {
            break;
        }
        if (err == CLERK_OK) {
            last_ok = sent;
            ttl_ms = (uint64_t)(ttl > 0 ? ttl : 1) * 1000;
            char text[64];
            snprintf(text, sizeof text, "keepalived with TTL(%lld)",
                     (long long)ttl);
            answer_lease(id, json_pack("{sI}", "ttl", (json_int_t)ttl), text);
            fflush(stdout);
            if (once) {
                break;
            }
        } else if (err == CLERK_LEASE_NOT_FOUND || once || !last_ok ||
                   ck_now_ms() >= last_ok + ttl_ms) {
            rv = answer_clerk(ck, err);
            break;
        }
        /* The next renewal a third of the TTL after the last good one
         * (sooner after a failure, while the lease still lives). */
        uint64_t next = err == CLERK_OK ? last_ok + ttl_ms / 3
                                        : ck_now_ms() + ttl_ms / 20 + 50;
        while (!interrupted && ck_now_ms() < next) {
            uint64_t left = next - ck_now_ms();
            struct timespec ts = {0, (long)(left < 100 ? left : 100) * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    ck_keepalive_close(ka);
out_restore_signals:
    restore_interrupt(&old_int, &old_term);
    return rv;
}

static int cmd_lease(struct clerk *ck, struct tok *t, int n)
{
    const char *use =
        "usage: kvctl lease grant TTL | revoke ID | keep-alive ID [--once] "
        "| timetolive ID [--keys] | list";
    if (n < 2) {
        return usage_error(use);
    }
    const char *sub = t[1].p;
    bool list = !strcmp(sub, "list");
    bool grant = !strcmp(sub, "grant");
    uint64_t id = 0;
    bool flag = false;
    if (list) {
        if (n != 2) {
            return usage_error(use);
        }
    } else if (grant) {
        char *end;
        errno = 0;
        long long ttl = n == 3 ? strtoll(t[2].p, &end, 10) : 0;
        if (n != 3 || errno || end == t[2].p || *end || ttl <= 0) {
            return usage_error("usage: kvctl lease grant TTL (seconds, > 0)");
        }
        int64_t got = 0;
        int err = clerk_lease_grant(ck, ttl, 0, &id, &got);
        if (err) {
            return answer_clerk(ck, err);
        }
        char text[64];
        snprintf(text, sizeof text, "granted with TTL(%llds)", (long long)got);
        answer_lease(id, json_pack("{sI}", "ttl", (json_int_t)got), text);
        return EXIT_OK;
    } else {
        const char *opt = !strcmp(sub, "keep-alive")   ? "--once"
                          : !strcmp(sub, "timetolive") ? "--keys"
                                                       : NULL;
        if (strcmp(sub, "revoke") && !opt) {
            return usage_error(use);
        }
        if (n == 4 && opt && !strcmp(t[3].p, opt)) {
            flag = true;
        } else if (n != 3) {
            return usage_error(use);
        }
        if (!kvctl_parse_lease_id(t[2].p, &id)) {
            return usage_error(
                "ID is a lease id in hex (as lease grant and "
                "lease list print it)");
        }
    }
    int err;
    if (!strcmp(sub, "revoke")) {
        uint64_t rev = 0, deleted = 0;
        err = clerk_lease_revoke(ck, id, &rev, &deleted);
        if (err) {
            return answer_clerk(ck, err);
        }
        char text[80];
        snprintf(text, sizeof text, "revoked (%llu keys deleted)",
                 (unsigned long long)deleted);
        answer_lease(id,
                     json_pack("{s{sI}sI}", "header", "revision",
                               (json_int_t)rev, "deleted", (json_int_t)deleted),
                     text);
        return EXIT_OK;
    }
    if (!strcmp(sub, "keep-alive")) {
        if (pipe_mode && !flag) {
            return usage_error(
                "lease keep-alive runs until interrupted: in pipe mode "
                "give --once");
        }
        return lease_keepalive(ck, id, flag);
    }
    if (list) {
        uint64_t *ids = NULL;
        size_t count = 0;
        err = clerk_lease_list(ck, &ids, &count);
        if (err) {
            return answer_clerk(ck, err);
        }
        if (fmt == FMT_JSON) {
            json_t *o = ok_object(), *arr = json_array();
            for (size_t i = 0; i < count; i++) {
                json_array_append_new(arr, ju64(ids[i]));
            }
            json_object_set_new(o, "leases", arr);
            emit(o);
        } else {
            printf("found %zu leases%s", count, pipe_mode ? "" : "\n");
            for (size_t i = 0; i < count; i++) {
                printf(pipe_mode ? " %016llx" : "%016llx\n",
                       (unsigned long long)ids[i]);
            }
            if (pipe_mode) {
                putchar('\n');
            }
        }
        clerk_free(ids);
        return EXIT_OK;
    }
    struct clerk_lease_ttl_result *r = NULL;
    err = clerk_lease_timetolive(ck, id, flag, &r);
    if (err) {
        return answer_clerk(ck, err);
    }
    if (fmt == FMT_JSON) {
        json_t *keys = json_array();
        for (size_t i = 0; i < r->n_keys; i++) {
            json_array_append_new(keys,
                                  jb64(r->keys[i].key, r->keys[i].key_len));
        }
        json_t *m = json_pack("{sIsIs{sI}}", "ttl", (json_int_t)r->ttl,
                              "granted_ttl", (json_int_t)r->granted_ttl,
                              "header", "revision", (json_int_t)r->revision);
        if (flag) {
            json_object_set_new(m, "keys", keys);
        } else {
            json_decref(keys);
        }
        answer_lease(id, m, "");
    } else {
        printf("lease %016llx granted with TTL(%llds), remaining(%llds)",
               (unsigned long long)id, (long long)r->granted_ttl,
               (long long)r->ttl);
        if (flag) {
            fputs(", attached keys([", stdout);
            for (size_t i = 0; i < r->n_keys; i++) {
                if (i) {
                    putchar(' ');
                }
                fwrite(r->keys[i].key, 1, r->keys[i].key_len, stdout);
            }
            fputs("])", stdout);
        }
        putchar('\n');
    }
    clerk_lease_ttl_result_free(r);
    return EXIT_OK;
}

/* The child running a locked COMMAND (0: none), for the lease's lost
 * callback, and whether the lease was lost. */
static atomic_int lock_child; /* pid */
static atomic_bool lock_lost;

/* The keep-alive gave up: the lock is gone or may be; stop the command. */
static void on_lock_lost(uint64_t id, int reason, void *arg)
{
    (void)id;
    (void)reason;
    (void)arg;
    atomic_store(&lock_lost, true);
    pid_t p = atomic_load(&lock_child);
    if (p > 0) {
        kill(p, SIGTERM);
    }
}

/* A lease for a lock or a candidacy, and its keep-alive thread. */
struct held_lease
{
    uint64_t id;
    struct clerk_keepalive *ka;
};

static int hold_lease(struct clerk *ck, long long ttl, struct held_lease *h)
{
    atomic_store(&lock_lost, false);
    int err = clerk_lease_grant(ck, ttl, 0, &h->id, NULL);
    if (!err) {
        err =
            clerk_lease_keepalive_start(ck, h->id, on_lock_lost, NULL, &h->ka);
        if (err) {
            clerk_lease_revoke(ck, h->id, NULL, NULL);
        }
    }
    return err;
}

static void drop_lease(struct clerk *ck, struct held_lease *h)
{
    clerk_lease_keepalive_stop(h->ka);
    clerk_lease_revoke(ck, h->id, NULL, NULL);
}

/* --ttl N and --wait-ms N of lock and elect; the other tokens (up to a
 * "--") go to args. Returns false on a bad value. */
static bool recipe_options(struct tok *t,
                           int n,
                           int *end,
                           long long *ttl,
                           uint64_t *wait_ms,
                           struct tok *args,
                           int *m)
{
    *m = 0;
    int i = 1;
    for (; i < n && strcmp(t[i].p, "--"); i++) {
        uint64_t v = 0;
        bool bad = false;
        if (num_option(t, n, &i, "--ttl", &v, &bad)) {
            if (bad || v == 0 || v > 31536000) {
                return false;
            }
            *ttl = (long long)v;
        } else if (num_option(t, n, &i, "--wait-ms", &v, &bad)) {
            if (bad || v > UINT32_MAX) {
                return false;
            }
            *wait_ms = v;
        } else if (t[i].p[0] == '-' && t[i].len > 1) {
            return false;
        } else {
            args[(*m)++] = t[i];
        }
    }
    *end = i;
    return true;
}

static void wait_interrupt(void)
{
    while (!interrupted && !atomic_load(&lock_lost)) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}

/* Run COMMAND with the lock's key, token and lease in its environment;
 * its exit status (128 + signal when killed). */
static int run_locked(char **argv, const struct clerk_lock *l, uint64_t lease)
{
    char tok[32], lid[32];
    size_t klen;
    const char *key = clerk_lock_key(l, &klen);
    snprintf(tok, sizeof tok, "%llu", (unsigned long long)clerk_lock_token(l));
    snprintf(lid, sizeof lid, "%016llx", (unsigned long long)lease);
    /* Set here: after fork, in a process with threads, the child only
     * execs. */
    if (setenv("RAFTKV_LOCK_KEY", key, 1) ||
        setenv("RAFTKV_LOCK_TOKEN", tok, 1) ||
        setenv("RAFTKV_LOCK_LEASE", lid, 1)) {
        return -1;
    }
    char fail[300];
    int fail_len =
        snprintf(fail, sizeof fail, "kvctl: lock: cannot run %s\n", argv[0]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execvp(argv[0], argv);
        if (write(2, fail, (size_t)fail_len) < 0) {
            _exit(127);
        }
        _exit(127);
    }
    atomic_store(&lock_child, pid);
    if (atomic_load(&lock_lost)) {
        kill(pid, SIGTERM); /* lost before the child was known */
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        if (interrupted) {
            kill(pid, SIGTERM);
        }
    }
    atomic_store(&lock_child, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* kvctl lock NAME [--ttl N] [--wait-ms N] [-- COMMAND [ARG...]] */
static int cmd_lock(struct clerk *ck, struct tok *t, int n)
{
    static const char use[] =
        "usage: kvctl lock NAME [--ttl SECONDS] [--wait-ms N] "
        "[-- COMMAND [ARG...]]";
    struct tok args[MAX_TOKENS];
    int m, end;
    long long ttl = 10;
    uint64_t wait_ms = UINT32_MAX;
    if (!recipe_options(t, n, &end, &ttl, &wait_ms, args, &m) || m != 1 ||
        (end < n && end + 1 >= n)) {
        return usage_error(use);
    }
    if (pipe_mode) {
        return usage_error(
            "lock holds the lock while it runs: not in pipe "
            "mode");
    }
    char *argv[MAX_TOKENS + 1];
    int argc = 0;
    for (int i = end + 1; i < n; i++) {
        argv[argc++] = t[i].p;
    }
    argv[argc] = NULL;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    interrupted = 0;
    struct held_lease h = {0};
    int err = hold_lease(ck, ttl, &h);
    struct clerk_lock *l = NULL;
    if (!err) {
        err = ck_lock_take(ck, args[0].p, args[0].len, h.id, "", 0,
                           (unsigned)wait_ms, &interrupted, &l);
        if (err) {
            drop_lease(ck, &h);
        }
    }
    if (err || interrupted) {
        /* Interrupted while waiting: out of the line, nothing run. */
        int rv = interrupted ? 130 : answer_clerk(ck, err);
        if (!err) {
            clerk_unlock(ck, l);
            drop_lease(ck, &h);
        }
        restore_interrupt(&old_int, &old_term);
        return rv;
    }
    size_t klen;
    const char *key = clerk_lock_key(l, &klen);
    int rv = EXIT_OK;
    if (argc) {
        rv = run_locked(argv, l, h.id);
        if (rv < 0) {
            rv = answer_error("ERROR", "cannot start the command", false, NULL,
                              0, false);
        }
    } else {
        if (fmt == FMT_JSON) {
            json_t *o = ok_object();
            json_object_set_new(o, "key", jb64(key, klen));
            json_object_set_new(o, "token", ju64(clerk_lock_token(l)));
            json_object_set_new(o, "lease", ju64(h.id));
            emit(o);
        } else {
            printf("%s\n%llu\n", key, (unsigned long long)clerk_lock_token(l));
        }
        fflush(stdout);
        wait_interrupt();
    }
    if (atomic_load(&lock_lost)) {
        rv = answer_error("NOT_HELD",
                          "the lock was lost: its lease could not be kept "
                          "alive (guarded writes are refused from then on)",
                          false, NULL, 0, false);
    }
    clerk_unlock(ck, l);
    drop_lease(ck, &h);
    restore_interrupt(&old_int, &old_term);
    return rv;
}

/* Print the leader's proposal each time it changes, until interrupted. */
static int elect_observe(struct clerk *ck, const struct tok *name)
{
    char *prev = NULL; /* the leader's proposal last printed */
    size_t prev_len = 0;
    bool printed = false, prev_none = false;
    char prefix[512];
    if (name->len + 1 >= sizeof prefix) {
        return usage_error("NAME: too long");
    }
    memcpy(prefix, name->p, name->len);
    prefix[name->len] = '/';
    uint8_t pend[520];
    size_t pend_len = clerk_prefix_end(prefix, name->len + 1, pend);
    while (!interrupted) {
        struct clerk_range_result *rr;
        int err = clerk_range(ck, prefix, name->len + 1, pend, pend_len, 0,
                              CLERK_RANGE_COUNT_ONLY, &rr);
        if (err) {
            free(prev);
            return answer_clerk(ck, err);
        }
        uint64_t rev = rr->revision;
        clerk_range_result_free(rr);
        struct clerk_kv *kv = NULL;
        err = clerk_election_leader(ck, name->p, name->len, &kv);
        if (err && err != CLERK_NOT_FOUND) {
            free(prev);
            return answer_clerk(ck, err);
        }
        bool none = kv == NULL;
        bool changed = !printed || none != prev_none ||
                       (!none && (kv->value_len != prev_len ||
                                  memcmp(prev, kv->value, prev_len)));
        if (changed) {
            if (fmt == FMT_JSON) {
                json_t *o = ok_object();
                json_object_set_new(o, "leader",
                                    kv ? json_kv(kv) : json_null());
                emit(o);
            } else if (kv) {
                fwrite(kv->value, 1, kv->value_len, stdout);
                putchar('\n');
            } else {
                puts("(no leader)");
            }
            fflush(stdout);
            printed = true;
            prev_none = none;
            free(prev);
            prev = NULL;
            prev_len = 0;
            if (!none && (prev = malloc(kv->value_len + 1)) != NULL) {
                memcpy(prev, kv->value, kv->value_len);
                prev_len = kv->value_len;
            }
        }
        clerk_kv_free(kv);
        /* Sleep until something under NAME/ changes after that read. */
        struct clerk_watch_options o = {.start_revision = rev + 1};
        struct clerk_watch *w;
        err =
            clerk_watch_open(ck, prefix, name->len + 1, pend, pend_len, &o, &w);
        if (err) {
            free(prev);
            return answer_clerk(ck, err);
        }
        while (!interrupted) {
            struct clerk_events_result *b;
            err = clerk_watch_next(w, 200, &b);
            if (err == CLERK_TIMEOUT) {
                continue;
            }
            bool any = !err && b->n_events > 0;
            clerk_events_result_free(b);
            if (err || any) {
                break;
            }
        }
        clerk_watch_close(w);
    }
    free(prev);
    return EXIT_OK;
}

/* kvctl elect NAME [PROPOSAL] [--ttl N] [--wait-ms N] */
static int cmd_elect(struct clerk *ck, struct tok *t, int n)
{
    static const char use[] =
        "usage: kvctl elect NAME [PROPOSAL] [--ttl SECONDS] [--wait-ms N]";
    struct tok args[MAX_TOKENS];
    int m, end;
    long long ttl = 10;
    uint64_t wait_ms = UINT32_MAX;
    if (!recipe_options(t, n, &end, &ttl, &wait_ms, args, &m) || m < 1 ||
        m > 2 || end != n) {
        return usage_error(use);
    }
    if (pipe_mode) {
        return usage_error("elect runs until interrupted: not in pipe mode");
    }
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    interrupted = 0;
    int rv;
    if (m == 1) {
        rv = elect_observe(ck, &args[0]);
    } else {
        struct held_lease h = {0};
        int err = hold_lease(ck, ttl, &h);
        if (err) {
            restore_interrupt(&old_int, &old_term);
            return answer_clerk(ck, err);
        }
        struct clerk_lock *l = NULL;
        err = ck_lock_take(ck, args[0].p, args[0].len, h.id, args[1].p,
                           args[1].len, (unsigned)wait_ms, &interrupted, &l);
        if (err || interrupted) {
            rv = interrupted ? 130 : answer_clerk(ck, err);
            if (!err) {
                clerk_resign(ck, l);
            }
        } else {
            size_t klen;
            const char *key = clerk_lock_key(l, &klen);
            if (fmt == FMT_JSON) {
                json_t *o = ok_object();
                json_object_set_new(o, "key", jb64(key, klen));
                json_object_set_new(o, "revision", ju64(clerk_lock_token(l)));
                emit(o);
            } else {
                printf("%s\n%.*s\n", key, (int)args[1].len, args[1].p);
            }
            fflush(stdout);
            wait_interrupt();
            rv = atomic_load(&lock_lost)
                     ? answer_error("NOT_HELD",
                                    "leadership lost: the lease could "
                                    "not be kept alive",
                                    false, NULL, 0, false)
                     : EXIT_OK;
            clerk_resign(ck, l);
        }
        drop_lease(ck, &h);
    }
    restore_interrupt(&old_int, &old_term);
    return rv;
}

/* Run one command; returns its exit code. */
static int run_command(struct clerk *ck, struct tok *t, int n)
{
    const char *cmd = t[0].p;
    char msg[300];
    if (n >= 2 && (!strcmp(t[1].p, "--help") || !strcmp(t[1].p, "-h"))) {
        return command_help(cmd);
    }
#define NEED(count, use)                                   \
    if (n != (count)) {                                    \
        snprintf(msg, sizeof msg, "usage: kvctl %s", use); \
        return usage_error(msg);                           \
    }
    int err;
    struct range_spec spec;
    if (!strcmp(cmd, "get")) {
        if (!kvctl_parse_spec(SPEC_GET, t + 1, n - 1, &spec, msg, sizeof msg)) {
            return usage_error(msg);
        }
        if (spec.extended) {
            return cmd_get_range(ck, &spec);
        }
        void *v;
        size_t len;
        err = clerk_get(ck, spec.key.p, spec.key.len, &v, &len);
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_value(v, len);
        clerk_free(v);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "put") || !strcmp(cmd, "append")) {
        bool put = cmd[0] == 'p';
        if (put) {
            if (!kvctl_parse_spec(SPEC_PUT, t + 1, n - 1, &spec, msg,
                                  sizeof msg)) {
                return usage_error(msg);
            }
            if (spec.value_file || spec.value_stdin) {
                return cmd_put_read(ck, &spec);
            }
            if (spec.extended) {
                return cmd_put_ex(ck, &spec);
            }
            t[1] = spec.key;
            t[2] = spec.value;
            n = 3;
        }
        NEED(3, put ? "put KEY VALUE" : "append KEY VALUE");
        err = put ? clerk_put(ck, t[1].p, t[1].len, t[2].p, t[2].len)
                  : clerk_append(ck, t[1].p, t[1].len, t[2].p, t[2].len);
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_ok();
        return EXIT_OK;
    }
    if (!strcmp(cmd, "del")) {
        if (!kvctl_parse_spec(SPEC_DEL, t + 1, n - 1, &spec, msg, sizeof msg)) {
            return usage_error(msg);
        }
        if (spec.extended) {
            return cmd_del_range(ck, &spec);
        }
        err = clerk_delete(ck, spec.key.p, spec.key.len);
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_ok();
        return EXIT_OK;
    }
    if (!strcmp(cmd, "cas")) {
        bool absent = n >= 2 && !strcmp(t[1].p, "--absent");
        if (absent) {
            NEED(4, "cas --absent KEY NEW");
        } else {
            NEED(4, "cas KEY EXPECTED NEW  (or cas --absent KEY NEW)");
        }
        struct tok *key = absent ? &t[2] : &t[1];
        void *cur = NULL;
        size_t cur_len = 0;
        err =
            clerk_cas(ck, key->p, key->len, absent ? NULL : t[2].p,
                      absent ? 0 : t[2].len, t[3].p, t[3].len, &cur, &cur_len);
        if (err == CLERK_CAS_MISMATCH) {
            int rv = answer_error(
                "CAS_MISMATCH",
                cur ? "the key holds another value"
                    : (absent ? "the key exists" : "the key does not exist"),
                false, cur, cur_len, cur != NULL);
            clerk_free(cur);
            return rv;
        }
        if (err) {
            return answer_clerk(ck, err);
        }
        answer_ok();
        return EXIT_OK;
    }
    if (!strcmp(cmd, "txn")) {
        return cmd_txn(ck, t, n);
    }
    if (!strcmp(cmd, "compact")) {
        return cmd_compact(ck, t, n);
    }
    if (!strcmp(cmd, "lease")) {
        return cmd_lease(ck, t, n);
    }
    if (!strcmp(cmd, "lock")) {
        return cmd_lock(ck, t, n);
    }
    if (!strcmp(cmd, "elect")) {
        return cmd_elect(ck, t, n);
    }
    if (!strcmp(cmd, "events") || !strcmp(cmd, "history")) {
        return cmd_events(ck, t, n);
    }
    if (!strcmp(cmd, "watch")) {
        return cmd_watch(ck, t, n);
    }
    if (!strcmp(cmd, "status")) {
        NEED(1, "status");
        return cmd_status(ck);
    }
    if (!strcmp(cmd, "transfer-leader")) {
        NEED(2, "transfer-leader ID|auto");
        return cmd_transfer_leader(ck, t[1].p);
    }
    if (!strcmp(cmd, "member")) {
        return cmd_member(ck, t, n);
    }
    if (!strcmp(cmd, "snapshot")) {
        if (n != 3 || strcmp(t[1].p, "save") != 0) {
            return usage_error("usage: kvctl snapshot save FILE|-");
        }
        return cmd_snapshot_save(ck, t[2].p);
    }
    if (!strcmp(cmd, "fault")) {
        return cmd_fault(ck, t, n);
    }
    if (!strcmp(cmd, "partition")) {
        return cmd_partition(ck, t, n);
    }
    if (!strcmp(cmd, "heal")) {
        NEED(1, "heal");
        struct node_rules nodes[MAX_NODES];
        size_t n_nodes;
        int rv = resolve_nodes(ck, "all", nodes, &n_nodes);
        return rv != EXIT_OK ? rv : apply_rules(ck, nodes, n_nodes, true, 1);
    }
    if (!strcmp(cmd, "user")) {
        return cmd_user(ck, t, n);
    }
    if (!strcmp(cmd, "role")) {
        return cmd_role(ck, t, n);
    }
    if (!strcmp(cmd, "auth")) {
        return cmd_auth(ck, t, n);
    }
    if (!strcmp(cmd, "help")) {
        if (n == 1) {
            return print_help(usage_text);
        }
        return command_help(t[1].p);
    }
#undef NEED
    snprintf(msg, sizeof msg, "unknown command '%.60s' (see kvctl help)", cmd);
    return usage_error(msg);
}

/* ------------------------------------------------------------ pipe mode */

/* Print a command's captured answer as exactly one line: as it is when
 * it is one line; rows joined by " | " (simple, table); several JSON
 * objects as {"ok":LAST_OK,"answers":[...]}; nothing as OK. */
static void answer_one_line(char *buf, size_t len)
{
    char *lines[256];
    size_t n = 0;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end;
        *stop = 0;
        if (stop > p && n < sizeof lines / sizeof lines[0]) {
            lines[n++] = p;
        }
        p = stop + 1;
    }
    if (n == 0) {
        if (fmt == FMT_JSON) {
            emit(ok_object());
        } else {
            puts("OK");
        }
        return;
    }
    if (fmt != FMT_JSON || n == 1) {
        for (size_t i = 0; i < n; i++) {
            fputs(i ? " | " : "", stdout);
            fputs(lines[i], stdout);
        }
        putchar('\n');
        return;
    }
    json_t *o = json_object(), *arr = json_array();
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_loads(lines[i], 0, NULL);
        ok = a ? json_is_true(json_object_get(a, "ok")) : false;
        json_array_append_new(arr, a ? a : jcstr(lines[i]));
    }
    json_object_set_new(o, "ok", json_boolean(ok));
    json_object_set_new(o, "answers", arr);
    emit(o);
}

/* Run one pipe-mode command with its answer captured, then print that
 * as one line. glibc lets stdout be assigned ("Standard Streams" in its
 * manual), so every printer writes to the capture unchanged. */
static void run_captured(struct clerk *ck, struct tok *t, int n)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) {
        answer_error("NO_MEMORY", "out of memory", false, NULL, 0, false);
        return;
    }
    FILE *out = stdout;
    fflush(out);
    stdout = mem;
    run_command(ck, t, n);
    stdout = out;
    fclose(mem);
    answer_one_line(buf, len);
    free(buf);
}

/* The first of kvctl's own options among a pipe-mode line's words (up
 * to --), which only its command line takes; NULL if none. */
static const char *global_option_in(const struct tok *t, int n)
{
    static const char *const names[] = {
        "--cluster",       "--endpoints", "-w",     "--write-out",
        "--timeout",       "--stale",     "--user", "--key",
        "--password-file", "--cacert",    "--cert",
    };
    bool user_cmd = !strcmp(t[0].p, "user");
    for (int i = 0; i < n && strcmp(t[i].p, "--") != 0; i++) {
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            if (!strcmp(t[i].p, names[k]) &&
                !(user_cmd && !strcmp(names[k], "--password-file"))) {
                return names[k];
            }
        }
    }
    return NULL;
}

static int pipe_loop(struct clerk *ck)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    bool prompt = isatty(STDIN_FILENO);
    for (;;) {
        if (prompt) {
            fputs("kvctl> ", stderr);
            fflush(stderr);
        }
        if ((len = getline(&line, &cap, stdin)) <= 0) {
            break;
        }
        struct tok t[MAX_TOKENS];
        const char *why = NULL;
        char *s = line;
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        if (*s == '#' || *s == '\n' || *s == 0) {
            continue;
        }
        int n = kvctl_tokenize(line, t, MAX_TOKENS, &why);
        const char *global = n > 0 ? global_option_in(t, n) : NULL;
        if (n < 0) {
            usage_error(why);
        } else if (global) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "%.60s is one of kvctl's own options: in pipe mode it "
                     "goes on kvctl's command line",
                     global);
            usage_error(msg);
        } else if (n > 0) {
            run_captured(ck, t, n);
        }
        fflush(stdout);
    }
    if (prompt) {
        fputc('\n', stderr);
    }
    free(line);
    return EXIT_OK;
}

/* ----------------------------------------------------------------- main */

/* kvctl's own options, before or after the command. */
struct globals
{
    const char *cluster;       /* --cluster LIST */
    const char *user;          /* --user NAME[:PASSWORD] */
    const char *password_file; /* --password-file FILE */
    const char *cacert;        /* --cacert FILE */
    const char *cert;          /* --cert FILE */
    const char *key;           /* --key FILE */
    double timeout;            /* --timeout SECONDS */
    bool stale;                /* --stale */
};

/* If argv[*i] is one of kvctl's own options, take it and its value (*i
 * moves past it) and set *rv: EXIT_OK, or the usage error's code.
 * @return whether it was one */
static bool take_global(int argc,
                        char **argv,
                        int *i,
                        struct globals *g,
                        int *rv)
{
    const char *a = argv[*i];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    const char **file = !strcmp(a, "--cacert")          ? &g->cacert
                        : !strcmp(a, "--cert")          ? &g->cert
                        : !strcmp(a, "--key")           ? &g->key
                        : !strcmp(a, "--password-file") ? &g->password_file
                                                        : NULL;
    *rv = EXIT_OK;
    if (!strcmp(a, "--cluster") || !strcmp(a, "--endpoints")) {
        if (!val) {
            *rv = usage_error("--cluster needs HOST:PORT,...");
        }
        g->cluster = val;
    } else if (!strcmp(a, "-w") || !strcmp(a, "--write-out")) {
        if (val && !strcmp(val, "simple")) {
            fmt = FMT_SIMPLE;
        } else if (val && !strcmp(val, "json")) {
            fmt = FMT_JSON;
        } else if (val && !strcmp(val, "table")) {
            fmt = FMT_TABLE;
        } else {
            *rv = usage_error("-w wants simple, json or table");
        }
    } else if (!strcmp(a, "--timeout")) {
        char *end = NULL;
        g->timeout = val ? strtod(val, &end) : 0;
        if (!val || *end || g->timeout <= 0 || g->timeout > 3600) {
            *rv = usage_error("--timeout wants seconds, from 0.001 to 3600");
        }
    } else if (!strcmp(a, "--stale")) {
        g->stale = true;
        return true;
    } else if (!strcmp(a, "--user")) {
        if (!val) {
            *rv = usage_error("--user needs NAME[:PASSWORD]");
        }
        g->user = val;
    } else if (file) {
        if (!val) {
            char msg[64];
            snprintf(msg, sizeof msg, "%s needs a FILE", a);
            *rv = usage_error(msg);
        }
        *file = val;
    } else {
        return false;
    }
    (*i)++;
    return true;
}

/* Take kvctl's own options out of the command's arguments (argv[cmd+1]
 * on), up to the word --; a command's option of the same name stays its
 * own (user add --password-file). The others keep their order.
 * @return EXIT_OK, or a usage error's code */
static int take_trailing_globals(int *argc,
                                 char **argv,
                                 int cmd,
                                 struct globals *g)
{
    bool user_cmd = !strcmp(argv[cmd], "user");
    int w = cmd + 1;
    for (int r = cmd + 1; r < *argc; r++) {
        if (!strcmp(argv[r], "--")) {
            while (r < *argc) {
                argv[w++] = argv[r++];
            }
            break;
        }
        int rv;
        bool own = user_cmd && !strcmp(argv[r], "--password-file");
        if (!own && take_global(*argc, argv, &r, g, &rv)) {
            if (rv != EXIT_OK) {
                return rv;
            }
            continue;
        }
        argv[w++] = argv[r];
    }
    *argc = w;
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    struct globals g = {.cluster = getenv("RAFTKV_CLUSTER"),
                        .user = getenv("RAFTKV_USER"),
                        .cacert = getenv("RAFTKV_CACERT"),
                        .cert = getenv("RAFTKV_CERT"),
                        .key = getenv("RAFTKV_KEY"),
                        .timeout = 5};
    no_memory_answer = json_pack("{sbssss}", "ok", 0, "error", "NO_MEMORY",
                                 "message", "out of memory");
    int i = 1, rv;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (take_global(argc, argv, &i, &g, &rv)) {
            if (rv != EXIT_OK) {
                return rv;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--version")) {
            fputs(RAFTKV_VERSION_LINE("kvctl"), stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown option %.60s (see kvctl --help)",
                     a);
            return usage_error(msg);
        }
    }
    if (i < argc && (rv = take_trailing_globals(&argc, argv, i, &g)) != 0) {
        return rv;
    }
    const char *cluster = g.cluster, *user_arg = g.user;
    const char *password_file = g.password_file;
    const char *cacert = g.cacert, *cert = g.cert, *key = g.key;
    double timeout = g.timeout;
    bool stale = g.stale;
    if (i < argc && !strcmp(argv[i], "help")) {
        struct tok t[2] = {{argv[i], strlen(argv[i])}};
        if (i + 1 < argc) {
            t[1] = (struct tok){argv[i + 1], strlen(argv[i + 1])};
        }
        return run_command(NULL, t, argc - i > 2 ? 2 : argc - i);
    }
    if (!cluster || !*cluster) {
        return usage_error(
            "no cluster: give --cluster HOST:PORT,... or set "
            "RAFTKV_CLUSTER");
    }
    struct clerk_options o = {
        .deadline_ms = (unsigned)(timeout * 1000),
        .read_mode = stale ? CLERK_READ_STALE : CLERK_READ_LINEARIZABLE};
    if (o.deadline_ms < 1000) {
        o.attempt_ms = o.deadline_ms;
    }
    o.cacert = cacert && *cacert ? cacert : NULL;
    o.cert = cert && *cert ? cert : NULL;
    o.key = key && *key ? key : NULL;
    char user[256] = "", password[256] = "";
    if (user_arg && user_arg[0]) {
        const char *colon = strchr(user_arg, ':');
        size_t nl = colon ? (size_t)(colon - user_arg) : strlen(user_arg);
        if (nl == 0 || nl >= sizeof user) {
            return usage_error("--user wants NAME[:PASSWORD]");
        }
        memcpy(user, user_arg, nl);
        const char *env_pw = getenv("RAFTKV_PASSWORD");
        if (colon) {
            snprintf(password, sizeof password, "%s", colon + 1);
        } else if (password_file) {
            if (!read_first_line(password_file, password, sizeof password)) {
                char msg[300];
                snprintf(msg, sizeof msg, "--password-file %.200s: %s",
                         password_file, strerror(errno));
                return usage_error(msg);
            }
        } else if (env_pw) {
            snprintf(password, sizeof password, "%s", env_pw);
        } else {
            char prompt[300];
            snprintf(prompt, sizeof prompt, "Password for %s: ", user);
            if (!prompt_password(prompt, password, sizeof password)) {
                return usage_error(
                    "no password for --user: give "
                    "NAME:PASSWORD, --password-file FILE or "
                    "RAFTKV_PASSWORD (or run on a terminal)");
            }
        }
        o.user = user;
        o.password = password;
    }
    struct clerk *ck;
    int err = clerk_open(&ck, cluster, &o);
    memset(password, 0, sizeof password);
    if (err) {
        return usage_error(clerk_open_error());
    }
    if (i >= argc) {
        pipe_mode = true;
        rv = pipe_loop(ck);
    } else {
        struct tok t[MAX_TOKENS];
        int n = argc - i;
        if (n > MAX_TOKENS) {
            clerk_close(ck);
            return usage_error("too many arguments");
        }
        for (int k = 0; k < n; k++) {
            t[k].p = argv[i + k];
            t[k].len = strlen(argv[i + k]);
        }
        rv = run_command(ck, t, n);
    }
    clerk_close(ck);
    return rv;
}
