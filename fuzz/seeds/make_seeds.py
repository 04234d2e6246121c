#!/usr/bin/env python3
"""Writes the hand-made seeds of every target into fuzz/corpus/<target>/ (idempotent).

The seeds are checked in; this script is how they were made and how a reviewer can read them all in one
place. Inputs a fuzzer found worth keeping are copied into the corpus directories as they are (it never
deletes them). Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = "1614265330"
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SPEC_BODY = b'{"test": 2432232314}'
I64_MAX = "9223372036854775807"
I64_MIN = "-9223372036854775808"


def verify(mode, params, id_, ts, sig, body=SPEC_BODY):
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    return b"\n".join([b(mode), b(params), b(id_), b(ts), b(sig)]) + b"\n" + b(body)


SPEC = f"{SPEC_TS} 300 {SPEC_SECRET}"

SEEDS = {
    "verify": {
        "spec-known-answer": verify("raw", SPEC, SPEC_ID, SPEC_TS, SPEC_SIG),
        "rotation-several-signatures": verify("raw", SPEC, SPEC_ID, SPEC_TS, f"v1,AAAA v2,whatever {SPEC_SIG}"),
        "many-v1-entries": verify("raw", SPEC, SPEC_ID, SPEC_TS, " ".join(["v1,AAAA"] * 300 + [SPEC_SIG])),
        "timestamp-whitespace": verify("raw", SPEC, SPEC_ID, f"  {SPEC_TS}\t", SPEC_SIG),
        "timestamp-plus-sign": verify("raw", SPEC, SPEC_ID, f"+{SPEC_TS}", SPEC_SIG),
        "timestamp-leading-zeros": verify("raw", SPEC, SPEC_ID, f"000{SPEC_TS}", SPEC_SIG),
        "timestamp-ideographic-space": verify("raw", SPEC, SPEC_ID, f"\u3000{SPEC_TS}", SPEC_SIG),
        "timestamp-not-a-number": verify("raw", SPEC, SPEC_ID, "1614265330.5", SPEC_SIG),
        "timestamp-u64-beyond-i64": verify("raw", SPEC, SPEC_ID, "18446744073709551615", SPEC_SIG),
        "tolerance-edge-inside": verify("raw", f"{int(SPEC_TS) + 300} 300 {SPEC_SECRET}", SPEC_ID, SPEC_TS, SPEC_SIG),
        "tolerance-edge-outside": verify("raw", f"{int(SPEC_TS) - 301} 300 {SPEC_SECRET}", SPEC_ID, SPEC_TS, SPEC_SIG),
        "tolerance-negative": verify("raw", f"{SPEC_TS} -1 {SPEC_SECRET}", SPEC_ID, SPEC_TS, SPEC_SIG),
        "timestamp-i64-max-now-zero": verify("raw", f"0 300 {SPEC_SECRET}", SPEC_ID, I64_MAX, SPEC_SIG),
        "timestamp-i64-min-now-negative": verify("raw", f"-1 300 {SPEC_SECRET}", SPEC_ID, I64_MIN, SPEC_SIG),
        "signature-bad-base64": verify("raw", SPEC, SPEC_ID, SPEC_TS, "v1,!!!! v1, v1 ,v1 v1,===="),
        "signature-unpadded": verify("raw", SPEC, SPEC_ID, SPEC_TS, SPEC_SIG.rstrip("=")),
        "signature-noncanonical-trailing-bits": verify("raw", SPEC, SPEC_ID, SPEC_TS, SPEC_SIG[:-2] + "F="),
        "signature-tab-separated": verify("raw", SPEC, SPEC_ID, SPEC_TS, f"v1,AAAA\t{SPEC_SIG}"),
        "signature-v2-only": verify("raw", SPEC, SPEC_ID, SPEC_TS, "v2," + SPEC_SIG[3:]),
        "signature-empty": verify("raw", SPEC, SPEC_ID, SPEC_TS, ""),
        "id-not-utf8": verify("raw", SPEC, b"msg_\xff\xfe", SPEC_TS, SPEC_SIG),
        "id-with-dots": verify("raw", SPEC, "msg.1614265330", "1614265330", SPEC_SIG, b"x"),
        "default-secret-and-clock": verify("raw", "", SPEC_ID, SPEC_TS, SPEC_SIG),
        "signed-plain": verify("signed", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-empty-body": verify("signed", SPEC, SPEC_ID, SPEC_TS, "", b""),
        "signed-among-extras": verify("signed", SPEC, SPEC_ID, SPEC_TS, "v1,AAAA v1a,x v1,"),
        "signed-body-byte-changed": verify("signed body 5 32", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-id-byte-changed": verify("signed id 0 1", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-id-byte-made-invalid-utf8": verify("signed id 3 128", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-ts-byte-changed": verify("signed ts 9 1", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-ts-digit-to-space": verify("signed ts 0 17", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-sig-prefix-changed": verify("signed sig 0 1", SPEC, SPEC_ID, SPEC_TS, "v1,AAAA"),
        "signed-sig-last-char-changed": verify("signed sig 45 1", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-sig-padding-changed": verify("signed sig 46 1", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-sig-char-to-space": verify("signed sig 20 10", SPEC, SPEC_ID, SPEC_TS, ""),
        "signed-out-of-tolerance": verify("signed", f"0 300 {SPEC_SECRET}", SPEC_ID, SPEC_TS, ""),
        "signed-extreme-timestamp-huge-tolerance": verify("signed", f"-1 {I64_MAX} {SPEC_SECRET}", SPEC_ID, I64_MIN, ""),
        "signed-short-secret": verify("signed body 0 255", f"{SPEC_TS} 300 whsec_AA==", SPEC_ID, SPEC_TS, ""),
        # The known overflow in `(now - timestamp).abs()`, fixed separately in signing.rs: these fail (panic
        # with "attempt to subtract with overflow" / "attempt to negate with overflow") until that fix lands.
        "known-overflow-timestamp-i64-min": verify("raw", SPEC, SPEC_ID, I64_MIN, SPEC_SIG),
        "known-overflow-abs-of-i64-min": verify("raw", f"-1 300 {SPEC_SECRET}", SPEC_ID, I64_MAX, SPEC_SIG),
    },
    "url_vetting": {
        "public-name": "https://example.com/hooks\n93.184.215.14\n",
        "public-name-v6": "https://example.com/hooks\n2606:2800:21f:cb07:6820:80da:af6b:8b2c\n",
        "name-to-loopback": "https://example.com/\n127.0.0.1\n",
        "name-public-and-private": "https://example.com/\n8.8.8.8\n10.0.0.1\n",
        "name-duplicate-answers": "https://example.com/\n8.8.8.8\n8.8.8.8\n::ffff:8.8.8.8\n",
        "name-empty-answer": "https://example.com/\nempty\n",
        "name-unknown": "https://example.com/\n",
        "name-to-metadata": "https://metadata.example/\n169.254.169.254\n",
        "name-to-mapped-loopback": "https://example.com/\n::ffff:127.0.0.1\n",
        "name-to-nat64-metadata": "https://example.com/\n64:ff9b::a9fe:a9fe\n",
        "name-to-nat64-public": "https://example.com/\n64:ff9b::808:808\n",
        "name-to-6to4-loopback": "https://example.com/\n2002:7f00:1::\n",
        "name-to-teredo-documentation-client": "https://example.com/\n2001:0:4136:e378:8000:63bf:3fff:fdd2\n",
        "name-to-amt": "https://example.com/\n2001:3::1\n",
        "name-to-orchid": "https://example.com/\n2001:20::1\n",
        "name-to-cgnat": "https://example.com/\n100.64.0.1\n",
        "name-to-pcp-anycast": "https://example.com/\n192.0.0.9\n",
        "literal-loopback": "https://127.0.0.1/\n",
        "literal-decimal-ipv4": "https://2130706433/\n",
        "literal-hex-ipv4": "https://0x7f.1/\n",
        "literal-octal-ipv4": "https://0177.0.0.1/\n",
        "literal-short-ipv4": "https://127.1/\n",
        "literal-public-decimal": "https://134744072/\n",
        "literal-mapped-loopback": "https://[::ffff:127.0.0.1]/\n",
        "literal-mapped-public": "https://[::ffff:8.8.8.8]:8443/x\n",
        "literal-unspecified-v4": "https://0.0.0.0/\n",
        "literal-unspecified-v6": "https://[::]/\n",
        "literal-broadcast": "https://255.255.255.255/\n",
        "literal-link-local-zone": "https://[fe80::1%25eth0]/\n",
        "literal-ipv4-compatible": "https://[::8.8.8.8]/\n",
        "not-https": "http://example.com/\n93.184.215.14\n",
        "scheme-uppercase": "HTTPS://Example.COM/Hooks\n93.184.215.14\n",
        "credentials": "https://user:pass@example.com/\n93.184.215.14\n",
        "credentials-empty-password": "https://:@example.com/\n93.184.215.14\n",
        "fragment": "https://example.com/#frag\n93.184.215.14\n",
        "trailing-dot": "https://example.com./\n93.184.215.14\n",
        "empty-label": "https://a..example/\n93.184.215.14\n",
        "only-dot": "https://./\n93.184.215.14\n",
        "port-and-query": "https://example.com:8443/p/a%20th?q=1&r=%00\n93.184.215.14\n",
        "port-default-explicit": "https://example.com:443\n93.184.215.14\n",
        "port-zero": "https://example.com:0/\n93.184.215.14\n",
        "idn": "https://b\u00fccher.example/\n93.184.215.14\n",
        "backslash-authority": "https://example.com\\@evil.example/\n93.184.215.14\n",
        "backslashes-instead-of-slashes": "https:\\\\example.com\\x\n93.184.215.14\n",
        "tab-and-newline-in-url": "https://exa\tmple.com/p\ra\n93.184.215.14\n",
        "spaces-in-path": "https://example.com/a b<c>d\"e`f{g}\n93.184.215.14\n",
        "underscore-host": "https://a_b.example/\n93.184.215.14\n",
        "allowlisted-private": "https://internal.example/\n10.1.2.3\nallow 10.0.0.0/8\n",
        "allowlisted-mapped-network": "https://internal.example/\n10.1.2.3\nallow ::ffff:10.0.0.0/104\n",
        "allowlist-v6-everything-not-ipv4": "https://internal.example/\n10.1.2.3\nallow ::/0\n",
        "allowlisted-and-refused-mix": "https://internal.example/\n10.1.2.3\n127.0.0.1\nallow 10.0.0.0/8\n",
        # Known finding HostNotDnsName: accepted, but no TLS server name / no request can be made of them.
        "finding-host-not-dns-name-bang": "https://a!b.example/\n93.184.215.14\n",
        "finding-host-not-dns-name-leading-hyphen": "https://-a.example/\n93.184.215.14\n",
        "finding-host-not-dns-name-backtick": "https://example.`com/\n93.184.215.14\n",
        "finding-host-not-dns-name-too-long": "https://" + ".".join(["a" * 63] * 4) + "/\n93.184.215.14\n",
    },
    "retry_after": {
        "seconds": "1700000000\n120",
        "seconds-whitespace": "1700000000\n \t120 ",
        "zero": "1700000000\n0",
        "negative": "1700000000\n-5",
        "plus-sign": "1700000000\n+5",
        "u64-max": "1700000000\n18446744073709551615",
        "beyond-u64": "1700000000\n18446744073709551616",
        "many-digits": "1700000000\n" + "9" * 400,
        "fraction": "1700000000\n1.5",
        "exponent": "1700000000\n1e3",
        "hex": "1700000000\n0x10",
        "arabic-indic-digits": "1700000000\n\u0661\u0662\u0660",
        "imf-fixdate-future": "1445412000\nWed, 21 Oct 2015 07:30:00 GMT",
        "imf-fixdate-past": "1700000000\nWed, 21 Oct 2015 07:30:00 GMT",
        "rfc850-date": "784111000\nSunday, 06-Nov-94 08:49:37 GMT",
        "asctime-date": "784111000\nSun Nov  6 08:49:37 1994",
        "last-http-date": "1700000000\nFri, 31 Dec 9999 23:59:59 GMT",
        "date-wrong-weekday": "1700000000\nThu, 21 Oct 2015 07:30:00 GMT",
        "date-lowercase": "1445412000\nwed, 21 oct 2015 07:30:00 gmt",
        "now-far-past": "-62135596800\nWed, 21 Oct 2015 07:30:00 GMT",
        "now-i64-max": I64_MAX + "\nWed, 21 Oct 2015 07:30:00 GMT",
        "now-i64-min": I64_MIN + "\n120",
        "now-i64-max-seconds": I64_MAX + "\n1120",
        "round-trip-a-day": "1700000000 86400\n",
        "round-trip-to-year-9999": "253402300700 99\n",
        "no-clock-line": "Wed, 21 Oct 2015 07:30:00 GMT",
        "empty": "",
        "not-utf8": b"1700000000\n12\xff0",
    },
    "config": {
        "empty": "",
        "sqlite-defaults": 'database_url = "sqlite://webhooks-dispatch.db"\n',
        "postgres-password-and-keys": (
            'database_url = "postgres://app:hunter2hunter2@127.0.0.1:5432/db"\n'
            'api_keys = ["0123456789abcdef0123", "another-long-api-key-42"]\n'
        ),
        "postgres-encoded-password": 'database_url = " postgres://u:p%40ss%2Fword99@[::1]:5432/db "\n',
        "postgres-unparseable": 'database_url = "postgres://u:secretpassword@host:notaport/db"\n',
        "mysql-with-password": 'database_url = "mysql://u:secretpassword@host/db"\n',
        "api-key-too-short": 'api_keys = ["short-secret"]\n',
        "api-key-with-space": 'api_keys = ["a long key with spaces 1234"]\n',
        "api-key-not-a-list": 'api_keys = "0123456789abcdef0123"\n',
        "api-key-number": "api_keys = [12345678901234567890]\n",
        "insecure-no-auth-from-file": "insecure_no_auth = true\n",
        "unknown-field": 'lisen = "127.0.0.1:1"\n',
        "listen-v6": 'listen = "[::1]:8080"\n',
        "listen-bad-port": 'listen = "0.0.0.0:99999"\n',
        "allow-net": 'allow_net = ["10.0.0.0/8", "::ffff:10.0.0.0/104", " 192.168.0.0/16 "]\n',
        "allow-net-bad": 'allow_net = ["10.0.0.0/33"]\n',
        "enums": 'log_format = "json"\non_gone = "dead"\n',
        "enum-bad": 'log_format = "xml"\n',
        "operational-owner-blank": 'operational_owner = "   "\n',
        "ca-file-missing": 'ca_file = "/nonexistent/ca.pem"\n',
        "counts-zero": "concurrency = 0\n",
        "count-negative": "concurrency = -1\n",
        "body-limit-max": "body_limit = 18446744073709551615\n",
        "durations-zero": 'poll_interval = "0s"\n',
        "durations-off": 'disable_failing_after = "off"\n',
        "durations-u64-overflow": 'shutdown_grace = "99999999999999999999s"\n',
        "durations-no-unit": 'attempt_timeout = "10"\n',
        "durations-largest-days": 'disable_failing_after = "18446744073709551615d"\n',
        "durations-largest-ms": 'request_timeout = "18446744073709551615ms"\n',
        "duplicate-key": 'listen = "127.0.0.1:1"\nlisten = "127.0.0.1:2"\n',
        "syntax-error": 'listen = "127.0.0.1:1\napi_keys = [\n',
        "table-instead-of-string": "[database_url]\nhost = 'x'\n",
        "datetime-value": "listen = 1979-05-27T07:32:00Z\n",
        # Known findings (see Known in the fuzzcheck crate).
        "finding-attempt-timeout-overflows-instant": 'attempt_timeout = "18446744073709551615s"\n',
        "finding-poll-interval-overflows-instant": 'poll_interval = "213503982334602d"\n',
        "finding-query-password-shown": 'database_url = "postgres://app@127.0.0.1/db?password=hunter2secret"\n',
        "finding-escaped-quote-shown": 'api_keys = "abc\\"0123456789abcdefSECRETPART"\n',
    },
}


def main():
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates",
                           "webhooks-dispatch-server", "webhooks-dispatch.example.toml")
    with open(example, "rb") as f:
        SEEDS["config"]["example-file"] = f.read()
    for target, seeds in SEEDS.items():
        directory = os.path.join(ROOT, target)
        os.makedirs(directory, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data if isinstance(data, bytes) else data.encode())


if __name__ == "__main__":
    main()
