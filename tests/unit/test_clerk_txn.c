/* test_clerk_txn.c: libclerk's transaction builder and kvctl's parsers of
 * transactions (etcdctl's text form and etcd's JSON), without a server. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "internal.h"
#include "kvctl_parse.h"

static bool bytes_are(ProtobufCBinaryData d, const char *s)
{
    return d.len == strlen(s) && (d.len == 0 || !memcmp(d.data, s, d.len));
}

static void test_txn_builder_keeps_compares_and_ops_in_order(void)
{
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(
        clerk_txn_compare_value(t, "k\0x", 3, CLERK_CMP_EQUAL, "v\0", 2),
        CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_compare_mod(t, "m", 1, CLERK_CMP_GREATER, 5),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_compare_range_end(t, "n", 1), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_compare_version(t, "v", 1, CLERK_CMP_LESS, 2),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_compare_create(t, "c", 1, CLERK_CMP_NOT_EQUAL, 0),
                    CLERK_OK);
    CU_ASSERT_EQUAL(
        clerk_txn_put(t, CLERK_TXN_THEN, "a", 1, "1", 1, CLERK_PUT_PREV_KV),
        CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_range(t, CLERK_TXN_THEN, "a", 1, "b", 1, 10,
                                    CLERK_RANGE_KEYS_ONLY),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_delete(t, CLERK_TXN_ELSE, "p", 1, "q", 1,
                                     CLERK_DELETE_PREV_KV),
                    CLERK_OK);
    const Raftkv__TxnArgs *a = ck_txn_args(t);
    CU_ASSERT_EQUAL_FATAL(a->n_compare, 4);
    CU_ASSERT(bytes_are(a->compare[0]->key, "k") == false); /* 3 bytes */
    CU_ASSERT_EQUAL(a->compare[0]->key.len, 3);
    CU_ASSERT(!memcmp(a->compare[0]->key.data, "k\0x", 3));
    CU_ASSERT_EQUAL(a->compare[0]->target, RAFTKV__COMPARE__TARGET__VALUE);
    CU_ASSERT_EQUAL(a->compare[0]->value.len, 2);
    CU_ASSERT_EQUAL(a->compare[1]->target, RAFTKV__COMPARE__TARGET__MOD);
    CU_ASSERT_EQUAL(a->compare[1]->result, RAFTKV__COMPARE__RESULT__GREATER);
    CU_ASSERT_EQUAL(a->compare[1]->mod_revision, 5);
    CU_ASSERT(bytes_are(a->compare[1]->range_end, "n"));
    CU_ASSERT_EQUAL(a->compare[2]->target_union_case,
                    RAFTKV__COMPARE__TARGET_UNION_VERSION);
    CU_ASSERT_EQUAL(a->compare[2]->version, 2);
    CU_ASSERT_EQUAL(a->compare[3]->result, RAFTKV__COMPARE__RESULT__NOT_EQUAL);
    CU_ASSERT_EQUAL(a->compare[3]->target_union_case,
                    RAFTKV__COMPARE__TARGET_UNION_CREATE_REVISION);
    CU_ASSERT_EQUAL_FATAL(a->n_success, 2);
    CU_ASSERT_EQUAL_FATAL(a->n_failure, 1);
    CU_ASSERT(bytes_are(a->success[0]->request_put->value, "1"));
    CU_ASSERT(a->success[0]->request_put->prev_kv);
    CU_ASSERT_EQUAL(a->success[1]->request_range->limit, 10);
    CU_ASSERT(a->success[1]->request_range->keys_only);
    CU_ASSERT(bytes_are(a->success[1]->request_range->range_end, "b"));
    CU_ASSERT(a->failure[0]->request_delete_range->prev_kv);
    /* The wire form packs (and so the server can read it). */
    size_t len = raftkv__txn_args__get_packed_size(a);
    uint8_t *buf = malloc(len);
    raftkv__txn_args__pack(a, buf);
    Raftkv__TxnArgs *back = raftkv__txn_args__unpack(NULL, len, buf);
    CU_ASSERT_FATAL(back != NULL);
    CU_ASSERT_EQUAL(back->n_compare, 4);
    raftkv__txn_args__free_unpacked(back, NULL);
    free(buf);
    clerk_txn_free(t);
}

static void test_txn_builder_refuses_bad_input_and_limits(void)
{
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_EQUAL(clerk_txn_put(t, CLERK_TXN_THEN, "", 0, "v", 1, 0),
                    CLERK_BAD_REQUEST);
    CU_ASSERT_EQUAL(clerk_txn_put(t, 7, "k", 1, "v", 1, 0), CLERK_INVALID);
    CU_ASSERT_EQUAL(clerk_txn_compare_value(t, "k", 1, 9, "v", 1),
                    CLERK_INVALID);
    CU_ASSERT_EQUAL(clerk_txn_compare_range_end(t, "z", 1), CLERK_INVALID);
    CU_ASSERT_EQUAL(clerk_txn_txn(t, CLERK_TXN_THEN, t), CLERK_INVALID);
    for (int i = 0; i < CLERK_TXN_MAX_OPS; i++) {
        CU_ASSERT_EQUAL_FATAL(
            clerk_txn_put(t, i % 2 ? CLERK_TXN_THEN : CLERK_TXN_ELSE, "k", 1,
                          "v", 1, 0),
            CLERK_OK);
    }
    CU_ASSERT_EQUAL(clerk_txn_range(t, CLERK_TXN_THEN, "k", 1, NULL, 0, 0, 0),
                    CLERK_BAD_REQUEST);
    CU_ASSERT_EQUAL(ck_txn_args(t)->n_success + ck_txn_args(t)->n_failure,
                    CLERK_TXN_MAX_OPS);
    clerk_txn_free(t);

    /* Nesting: 8 deep is the most. */
    struct clerk_txn *inner = clerk_txn_new();
    clerk_txn_put(inner, CLERK_TXN_THEN, "x", 1, "1", 1, 0);
    for (int depth = 1; depth <= CLERK_TXN_MAX_DEPTH; depth++) {
        struct clerk_txn *outer = clerk_txn_new();
        CU_ASSERT_EQUAL_FATAL(clerk_txn_txn(outer, CLERK_TXN_THEN, inner),
                              CLERK_OK);
        inner = outer;
    }
    struct clerk_txn *too_deep = clerk_txn_new();
    CU_ASSERT_EQUAL(clerk_txn_txn(too_deep, CLERK_TXN_ELSE, inner),
                    CLERK_BAD_REQUEST);
    clerk_txn_free(inner); /* still the caller's after a refusal */
    clerk_txn_free(too_deep);
}

/* Whether a builder writes (a put or a delete, nested ones included):
 * one that does not is sent as a read (a deadline is TIMEOUT then). */
static void test_txn_builder_knows_whether_it_writes(void)
{
    struct clerk_txn *t = clerk_txn_new(), *inner = clerk_txn_new();
    CU_ASSERT_FATAL(t && inner);
    CU_ASSERT(!ck_txn_writes(t));
    clerk_txn_compare_version(t, "k", 1, CLERK_CMP_EQUAL, 0);
    clerk_txn_range(t, CLERK_TXN_THEN, "k", 1, NULL, 0, 0, 0);
    clerk_txn_range(inner, CLERK_TXN_ELSE, "a", 1, "b", 1, 0, 0);
    CU_ASSERT_EQUAL_FATAL(clerk_txn_txn(t, CLERK_TXN_ELSE, inner), CLERK_OK);
    CU_ASSERT(!ck_txn_writes(t));
    /* A refused put counts for nothing. */
    CU_ASSERT_EQUAL(clerk_txn_put(t, CLERK_TXN_THEN, "", 0, "v", 1, 0),
                    CLERK_BAD_REQUEST);
    CU_ASSERT(!ck_txn_writes(t));
    /* A put in a transaction nested two deep, in the branch that may not
     * run, makes the whole a write. */
    struct clerk_txn *mid = clerk_txn_new();
    inner = clerk_txn_new();
    CU_ASSERT_FATAL(mid && inner);
    clerk_txn_put(inner, CLERK_TXN_ELSE, "k", 1, "v", 1, 0);
    CU_ASSERT(ck_txn_writes(inner));
    CU_ASSERT_EQUAL_FATAL(clerk_txn_txn(mid, CLERK_TXN_THEN, inner), CLERK_OK);
    CU_ASSERT(ck_txn_writes(mid));
    CU_ASSERT_EQUAL_FATAL(clerk_txn_txn(t, CLERK_TXN_THEN, mid), CLERK_OK);
    CU_ASSERT(ck_txn_writes(t));
    clerk_txn_free(t);
    t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_delete(t, CLERK_TXN_ELSE, "k", 1, NULL, 0, 0);
    CU_ASSERT(ck_txn_writes(t));
    clerk_txn_free(t);
}

static void test_txn_text_parses_etcdctl_syntax(void)
{
    const char *text =
        "mod(\"k\") > \"5\"\n"
        "value(\"two words\") = \"v \\\"q\\\"\"\n"
        "version(\"k\") != 0\n"
        "create(\"a\", \"b\") = \"0\"\n"
        "\n"
        "put k \"new value\" --prev-kv\n"
        "get a b --limit 3\n"
        "# a comment\n"
        "\n"
        "del pre --prefix\n";
    struct clerk_txn *t;
    char why[300] = "";
    CU_ASSERT_FATAL(kvctl_txn_parse_text(text, &t, why, sizeof why));
    const Raftkv__TxnArgs *a = ck_txn_args(t);
    CU_ASSERT_EQUAL_FATAL(a->n_compare, 4);
    CU_ASSERT_EQUAL(a->compare[0]->target, RAFTKV__COMPARE__TARGET__MOD);
    CU_ASSERT_EQUAL(a->compare[0]->result, RAFTKV__COMPARE__RESULT__GREATER);
    CU_ASSERT_EQUAL(a->compare[0]->mod_revision, 5);
    CU_ASSERT(bytes_are(a->compare[1]->key, "two words"));
    CU_ASSERT(bytes_are(a->compare[1]->value, "v \"q\""));
    CU_ASSERT_EQUAL(a->compare[2]->result, RAFTKV__COMPARE__RESULT__NOT_EQUAL);
    CU_ASSERT_EQUAL(a->compare[3]->target, RAFTKV__COMPARE__TARGET__CREATE);
    CU_ASSERT(bytes_are(a->compare[3]->range_end, "b"));
    CU_ASSERT_EQUAL_FATAL(a->n_success, 2);
    CU_ASSERT(bytes_are(a->success[0]->request_put->value, "new value"));
    CU_ASSERT(a->success[0]->request_put->prev_kv);
    CU_ASSERT_EQUAL(a->success[1]->request_range->limit, 3);
    CU_ASSERT_EQUAL_FATAL(a->n_failure, 1);
    CU_ASSERT(bytes_are(a->failure[0]->request_delete_range->range_end, "prf"));
    clerk_txn_free(t);

    /* No compares: the text starts with the empty line. */
    CU_ASSERT_FATAL(kvctl_txn_parse_text("\nput a 1\n", &t, why, sizeof why));
    CU_ASSERT_EQUAL(ck_txn_args(t)->n_compare, 0);
    CU_ASSERT_EQUAL(ck_txn_args(t)->n_success, 1);
    clerk_txn_free(t);
}

static void test_txn_text_errors_name_the_line(void)
{
    static const struct
    {
        const char *text, *want;
    } bad[] = {
        {"mod(k) > 5\n", "line 1"},
        {"mod(\"k\") ~ 5\n", "operator"},
        {"mod(\"k\") > x\n", "number"},
        {"size(\"k\") > 5\n", "unknown compare target"},
        {"\nfrob k\n", "line 2: unknown op"},
        {"\nput k\n", "usage"},
        {"\n\n\n\nput k v\n", "more than three sections"},
        {"value(\"k\") = \"unterminated\n", "unterminated"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct clerk_txn *t = NULL;
        char why[300] = "";
        CU_ASSERT(!kvctl_txn_parse_text(bad[i].text, &t, why, sizeof why));
        CU_ASSERT(t == NULL);
        if (!strstr(why, bad[i].want)) {
            fprintf(stderr, "\n  %s: got '%s', want '%s'\n", bad[i].text, why,
                    bad[i].want);
            CU_FAIL("message");
        }
    }
}

static void test_txn_json_parses_etcd_shape(void)
{
    /* "k" = az, "v" = dg==, "a" = YQ==, "b" = Yg== */
    const char *json =
        "{\"compare\":[{\"key\":\"aw==\",\"target\":\"MOD\","
        "\"result\":\"GREATER\",\"mod_revision\":\"7\"},"
        "{\"key\":\"aw==\",\"target\":\"VALUE\",\"value\":\"dg==\"}],"
        "\"success\":[{\"request_put\":{\"key\":\"aw==\",\"value\":\"dg==\","
        "\"prev_kv\":true}},"
        "{\"request_txn\":{\"success\":[{\"request_range\":{\"key\":\"YQ==\","
        "\"range_end\":\"Yg==\",\"limit\":2}}]}}],"
        "\"failure\":[{\"request_delete_range\":{\"key\":\"YQ==\"}}]}";
    struct clerk_txn *t;
    char why[300] = "";
    CU_ASSERT_FATAL(kvctl_txn_parse_json(json, &t, why, sizeof why));
    const Raftkv__TxnArgs *a = ck_txn_args(t);
    CU_ASSERT_EQUAL_FATAL(a->n_compare, 2);
    CU_ASSERT_EQUAL(a->compare[0]->mod_revision, 7);
    CU_ASSERT(bytes_are(a->compare[0]->key, "k"));
    CU_ASSERT_EQUAL(a->compare[1]->result, RAFTKV__COMPARE__RESULT__EQUAL);
    CU_ASSERT(bytes_are(a->compare[1]->value, "v"));
    CU_ASSERT_EQUAL_FATAL(a->n_success, 2);
    CU_ASSERT(a->success[0]->request_put->prev_kv);
    const Raftkv__TxnArgs *nested = a->success[1]->request_txn;
    CU_ASSERT_FATAL(nested != NULL && nested->n_success == 1);
    CU_ASSERT_EQUAL(nested->success[0]->request_range->limit, 2);
    CU_ASSERT(bytes_are(nested->success[0]->request_range->range_end, "b"));
    CU_ASSERT_EQUAL(a->n_failure, 1);
    clerk_txn_free(t);

    CU_ASSERT(!kvctl_txn_parse_json("{\"compare\":[{\"key\":\"!!\"}]}", &t, why,
                                    sizeof why));
    CU_ASSERT(!kvctl_txn_parse_json("{\"success\":[{\"request_frob\":{}}]}", &t,
                                    why, sizeof why));
    CU_ASSERT(
        !kvctl_txn_parse_json("{\"compare\":[{\"key\":\"aw==\","
                              "\"result\":\"ABOUT\"}]}",
                              &t, why, sizeof why));
    CU_ASSERT(!kvctl_txn_parse_json("{not json", &t, why, sizeof why));
    CU_ASSERT(strstr(why, "JSON") != NULL);
}

static void test_base64_round_trips(void)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                          "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *b = kvctl_base64(in[i], strlen(in[i]));
        CU_ASSERT_STRING_EQUAL(b, want[i]);
        size_t n;
        char *back = kvctl_unbase64(b, &n);
        CU_ASSERT(back && n == strlen(in[i]) && !memcmp(back, in[i], n));
        free(b);
        free(back);
    }
    size_t n;
    CU_ASSERT(kvctl_unbase64("Zm9=v", &n) == NULL);
    CU_ASSERT(kvctl_unbase64("Z*==", &n) == NULL);
}

static void test_range_options_parse(void)
{
    char buf[] = "k --prefix --limit 5 --keys-only --sort-order descend";
    struct tok t[8];
    const char *why = NULL;
    int n = kvctl_tokenize(buf, t, 8, &why);
    struct range_spec s;
    char msg[300];
    CU_ASSERT_FATAL(kvctl_parse_spec(SPEC_GET, t, n, &s, msg, sizeof msg));
    CU_ASSERT(s.extended && s.ranged);
    CU_ASSERT_EQUAL(s.limit, 5);
    CU_ASSERT_EQUAL(s.end_len, 1);
    CU_ASSERT(((const char *)s.end)[0] == 'l');
    CU_ASSERT(s.flags & CLERK_RANGE_KEYS_ONLY);
    CU_ASSERT(s.flags & CLERK_RANGE_SORT_DESCEND);
    char plain[] = "k";
    n = kvctl_tokenize(plain, t, 8, &why);
    CU_ASSERT_FATAL(kvctl_parse_spec(SPEC_GET, t, n, &s, msg, sizeof msg));
    CU_ASSERT(!s.extended);
    char dash[] = "k -- --v";
    n = kvctl_tokenize(dash, t, 8, &why);
    CU_ASSERT_FATAL(kvctl_parse_spec(SPEC_PUT, t, n, &s, msg, sizeof msg));
    CU_ASSERT(!s.extended);
    CU_ASSERT_STRING_EQUAL(s.value.p, "--v");
    char both[] = "k e --prefix";
    n = kvctl_tokenize(both, t, 8, &why);
    CU_ASSERT(!kvctl_parse_spec(SPEC_DEL, t, n, &s, msg, sizeof msg));
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_txn_builder_keeps_compares_and_ops_in_order",
         test_txn_builder_keeps_compares_and_ops_in_order},
        {"test_txn_builder_refuses_bad_input_and_limits",
         test_txn_builder_refuses_bad_input_and_limits},
        {"test_txn_builder_knows_whether_it_writes",
         test_txn_builder_knows_whether_it_writes},
        {"test_txn_text_parses_etcdctl_syntax",
         test_txn_text_parses_etcdctl_syntax},
        {"test_txn_text_errors_name_the_line",
         test_txn_text_errors_name_the_line},
        {"test_txn_json_parses_etcd_shape", test_txn_json_parses_etcd_shape},
        {"test_base64_round_trips", test_base64_round_trips},
        {"test_range_options_parse", test_range_options_parse},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"clerk_txn", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
