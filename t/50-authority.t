# The credential authority (docs/auth.md): hookstream_auth_request with a
# real backend, the shared cache of its answers (hits across workers, one
# question for many concurrent first connections, positive and negative
# TTLs), failing closed, the source check through X-Hookstream-Sources,
# revocation closing live connections in every worker with 4001, the
# limit on failed credentials per address, and that the credential
# itself never reaches the backend or a log.
#
# The authority is a small Python HTTP server started by this file. It
# answers GET /auth from a table the tests give it (POST /_config),
# counts what it was asked (GET /_stats, POST /_reset) and keeps the
# headers of every question, so that a test can see what nginx sent.

use Test::Hookstream;

use File::Temp ();
use POSIX ();
use MIME::Base64 qw(encode_base64);
use Test::Hookstream::HTTP ();
use Test::Hookstream::IO ();

my $ORG1 = 'org_' . random_hex(32);
my $ORG2 = 'org_' . random_hex(32);
my $SRC1 = 'src_' . random_hex(32);
my $SRC2 = 'src_' . random_hex(32);

my $AUTHORITY = <<'PYTHON';
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
config = {"keys": {}, "delay": 0}
stats = {"count": 0, "by_hash": {}, "requests": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stdout.write("%s\n" % (fmt % args))
        sys.stdout.flush()

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        global config
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with lock:
            if self.path == "/_config":
                config = json.loads(body)
                config.setdefault("keys", {})
                config.setdefault("delay", 0)
            elif self.path == "/_reset":
                stats["count"] = 0
                stats["by_hash"] = {}
                stats["requests"] = []
            else:
                return self.reply(404)
        self.reply(204)

    def do_GET(self):
        if self.path == "/_stats":
            with lock:
                body = json.dumps(stats).encode()
            return self.reply(200, body,
                              [("Content-Type", "application/json")])

        h = self.headers.get("X-Hookstream-Credential-Hash", "")
        with lock:
            stats["count"] += 1
            stats["by_hash"][h] = stats["by_hash"].get(h, 0) + 1
            stats["requests"].append({
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
            })
            entry = config["keys"].get(h)
            delay = config.get("delay", 0)

        if entry and entry.get("delay") is not None:
            delay = entry["delay"]
        if delay:
            time.sleep(delay)

        if entry is None:
            return self.reply(401)

        if entry.get("status"):
            return self.reply(entry["status"])

        headers = []
        if entry.get("org"):
            headers.append(("X-Hookstream-Org", entry["org"]))
        if entry.get("sources") is not None:
            headers.append(("X-Hookstream-Sources",
                            ", ".join(entry["sources"])))
        self.reply(200, b"", headers)


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
server.serve_forever()
PYTHON

my $script = File::Temp->new(SUFFIX => '.py');
print {$script} $AUTHORITY;
close $script;

my $AUTH_PORT = free_port();

$ENV{TEST_NGINX_AUTH_PORT} = $AUTH_PORT;
$ENV{TEST_NGINX_DEAD_PORT} = free_port();
$ENV{TEST_NGINX_PORT2} = free_port();

start_process(['/usr/bin/python3', "$script", $AUTH_PORT],
              wait_port => $AUTH_PORT, timeout => 10)
    or die "the authority did not start\n";

our ($org1, $org2, $src1, $src2) = ($ORG1, $ORG2, $SRC1, $SRC2);

# --- the authority's side

sub authority {
    my ($method, $path, $body) = @_;

    my $r = http_request($method, $path, port => $AUTH_PORT,
                         body => $body // '',
                         headers => ['Content-Type: application/json']);

    die "authority $method $path: " . ($r->status // $r->error) . "\n"
        if !$r->status || $r->status >= 300;

    return $r;
}

# the table of answers: { raw key => { org, sources, status, delay } }
sub authority_config {
    my ($keys, %o) = @_;

    my %table = map { sha256_hex($_) => $keys->{$_} } keys %$keys;

    authority('POST', '/_config',
              encode_json({ keys => \%table, delay => $o{delay} // 0 }));
    authority('POST', '/_reset');
}

sub authority_stats {
    return decode_json(authority('GET', '/_stats')->body);
}

sub asked {
    my ($key) = @_;

    my $st = authority_stats();

    return defined $key ? ($st->{by_hash}{sha256_hex($key)} // 0)
                        : $st->{count};
}

# --- nginx's side

sub welcome_org {
    my ($c) = @_;

    return undef if !$c->upgraded;

    my $m = $c->recv_json_until(sub { $_[0]{type} eq 'welcome' }, 5);

    return $m ? $m->{data}{org_id} : undef;
}

# n handshakes written before any answer is read, so that they all reach
# nginx at once; returns the connections and their statuses
sub concurrent_connects {
    my ($path, $n, %o) = @_;

    my (@io, @status);

    for (1 .. $n) {
        my ($io, $err) = Test::Hookstream::IO->connect(
            port => $o{port} // server_port(), timeout => 10);

        die "connect: $err\n" if !$io;

        my $key = encode_base64(join('', map { chr int rand 256 } 1 .. 16),
                                '');

        $io->write_all("GET $path HTTP/1.1\r\n"
                       . "Host: localhost\r\n"
                       . "Upgrade: websocket\r\n"
                       . "Connection: Upgrade\r\n"
                       . "Sec-WebSocket-Key: $key\r\n"
                       . "Sec-WebSocket-Version: 13\r\n"
                       . ($o{headers} // '')
                       . "\r\n", 5)
            or die "write: " . $io->error . "\n";

        push @io, $io;
    }

    for my $io (@io) {
        my $r = Test::Hookstream::HTTP::read_response($io, timeout => 15);
        push @status, $r->status // 0;
    }

    return (\@io, \@status);
}

# the distinct worker pids that logged a line matching $re
sub pids_logging {
    my ($re) = @_;

    my %pids;

    for (split /\n/, error_log_text()) {
        $pids{$1} = 1 if /\] (\d+)#\d+: .*$re/;
    }

    return scalar keys %pids;
}

# lines of the error log that hold $secret, less nginx's own debug lines
# that print the request as it was read, before any module ran
sub leaks {
    my ($secret) = @_;

    return grep {
        index($_, $secret) >= 0
        && !/\[debug\] \d+#\d+: \*\d+ (?:http request line|http args|http header|parse header): /
    } split /\n/, error_log_text();
}

# nothing of the raw key reached the authority
sub authority_saw_no_secret {
    my ($key) = @_;

    my $st = authority_stats();

    for my $req (@{ $st->{requests} }) {
        return 0 if index($req->{path}, $key) >= 0;

        for my $h (@{ $req->{headers} }) {
            return 0 if index($h->[1], $key) >= 0;
            return 0 if lc $h->[0] eq 'x-api-key' || lc $h->[0] eq 'cookie';
        }
    }

    return 1;
}

sub header_of {
    my ($req, $name) = @_;

    for my $h (@{ $req->{headers} }) {
        return $h->[1] if lc $h->[0] eq lc $name;
    }

    return undef;
}

run_tests();

__DATA__

=== TEST 1: the authority allows a key; it is asked with the hash only
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 } });

my $c = ws_connect("/v1/ws?token=$key");
ok $c->upgraded, "upgraded" or diag $c->status, $c->body;
is main::welcome_org($c), $main::org1, "the authority's org";

my $st = main::authority_stats();
is $st->{count}, 1, "asked once";

my $req = $st->{requests}[0];
is $req->{path}, '/auth', "the authority's location";
is main::header_of($req, 'X-Hookstream-Credential-Hash'), sha256_hex($key),
   "the hash of the key";
is main::header_of($req, 'X-Hookstream-Credential-Kind'), 'api_key', "kind";
ok !defined main::header_of($req, 'X-Hookstream-Source'), "no source";
ok !defined main::header_of($req, 'Sec-WebSocket-Key'),
   "none of the client's headers";
ok main::authority_saw_no_secret($key), "the key never reached it";

# X-API-Key: same answer, from the cache
$c = ws_connect("/v1/ws", headers => [['X-API-Key', $key]]);
is main::welcome_org($c), $main::org1, "X-API-Key";
is main::asked(), 1, "a cache hit";

ok !main::leaks($key), "the key is not in the error log";
unlike access_log_text(), qr/\Q$key\E/, "nor in the access log";

# a new key in X-API-Key: the subrequest does not carry the header
my $key2 = make_api_key('test');
main::authority_config({ $key2 => { org => $main::org2 } });

$c = ws_connect("/v1/ws", headers => [['X-API-Key', $key2]]);
is main::welcome_org($c), $main::org2, "X-API-Key, asked";
is main::asked($key2), 1, "asked about it";
ok main::authority_saw_no_secret($key2), "the header never reached it";
ok !main::leaks($key2), "nor the error log";
--- no_error_log
[error]
[warn]



=== TEST 2: a session cookie is asked about as a session
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
hookstream_allowed_origins https://app.example;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $token = random_hex(64);
main::authority_config({ $token => { org => $main::org2 } });

my $c = ws_connect("/v1/ws",
                   headers => [['Cookie', "better-auth.session_token=$token"]],
                   origin => 'https://app.example');
is main::welcome_org($c), $main::org2, "the session's org";

my $req = main::authority_stats()->{requests}[0];
is main::header_of($req, 'X-Hookstream-Credential-Kind'), 'session', "kind";
ok main::authority_saw_no_secret($token), "the token never reached it";
ok !main::leaks($token), "nor the error log";

# the Origin is checked before the authority is asked
$c = ws_connect("/v1/ws",
                headers => [['Cookie', "better-auth.session_token=$token"]],
                origin => 'https://evil.example');
is $c->status, 403, "foreign Origin: 403";
is main::asked(), 1, "not asked for it";
--- no_error_log
[error]
[warn]



=== TEST 3: 401 and 403 of the authority; negative answers are cached
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
hookstream_auth_cache 30s 2s;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $bad = make_api_key('live');
my $forbidden = make_api_key('live');
main::authority_config({ $forbidden => { status => 403 } });

my $c = ws_connect("/v1/ws?token=$bad");
is $c->status, 401, "unknown key: 401";
is $c->json->{error}, "Invalid API key", "message";

$c = ws_connect("/v1/ws?token=$bad");
is $c->status, 401, "again 401";
is main::asked($bad), 1, "the refusal was cached";

$c = ws_connect("/v1/ws?token=$forbidden");
is $c->status, 403, "refused by the authority: 403";
$c = ws_connect("/v1/ws?token=$forbidden");
is $c->status, 403, "again 403";
is main::asked($forbidden), 1, "cached too";

sleep 2.3;

$c = ws_connect("/v1/ws?token=$bad");
is $c->status, 401, "after the negative TTL: 401";
is main::asked($bad), 2, "asked again after the negative TTL";
--- error_log
client sent an unknown API key (token argument)
the authority refused here
--- no_error_log
[error]
[warn]



=== TEST 4: the positive TTL
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
hookstream_auth_cache 2s 1s;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('test');
main::authority_config({ $key => { org => $main::org1 } });

for (1 .. 5) {
    my $c = ws_connect("/v1/ws?token=$key");
    ok $c->upgraded, "connection $_";
}

is main::asked($key), 1, "asked once within the TTL";

sleep 2.3;

my $c = ws_connect("/v1/ws?token=$key");
ok $c->upgraded, "after the TTL";
is main::asked($key), 2, "asked again after the TTL";

# the authority changed its mind: seen once the TTL passed
main::authority_config({});
$c = ws_connect("/v1/ws?token=$key");
ok $c->upgraded, "still cached";
sleep 2.3;
$c = ws_connect("/v1/ws?token=$key");
is $c->status, 401, "refused once the answer expired";
--- no_error_log
[error]
[warn]



=== TEST 5: cache hits across workers
--- workers: 2
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location = /_auth {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
    }
}
--- config
location /t { return 204; }
--- ws
my $key = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 } });

my $c = ws_connect("/v1/ws?token=$key", port => $ENV{TEST_NGINX_PORT2});
ok $c->upgraded, "first connection";

my $ok = 0;

for (1 .. 60) {
    my $d = ws_connect("/v1/ws?token=$key", port => $ENV{TEST_NGINX_PORT2});
    $ok++ if $d->upgraded;
}

is $ok, 60, "60 more connections";
is main::asked($key), 1, "one question for all of them";
ok main::pids_logging(qr/hookstream auth: sha256:[0-9a-f]+\.\.\. cached as allowed/)
   >= 2, "cache hits in both workers";
--- no_error_log
[error]
[warn]



=== TEST 6: 50 concurrent first connections make one question
--- workers: 2
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location = /_auth {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
    }
}
--- config
location /t { return 204; }
--- ws
my $key = make_api_key('live');
my $bad = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 } }, delay => 0.5);

my ($io, $status) = main::concurrent_connects("/v1/ws?token=$key", 50,
                                              port => $ENV{TEST_NGINX_PORT2});

is scalar(grep { $_ == 101 } @$status), 50, "all 50 upgraded"
    or diag "@$status";
is main::asked($key), 1, "one question to the authority";
ok main::pids_logging(qr/hookstream auth: looking at the cache again/) >= 2,
   "requests waited in both workers";

# the same for a refused key
($io, $status) = main::concurrent_connects("/v1/ws?token=$bad", 20,
                                           port => $ENV{TEST_NGINX_PORT2});

is scalar(grep { $_ == 401 } @$status), 20, "all 20 refused"
    or diag "@$status";
is main::asked($bad), 1, "one question for the refused key";
--- no_error_log
[error]
[warn]



=== TEST 7: fail closed: authority down, 500, no org, timeout
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_fail_limit 0;
--- config
location /v1/ws {
    hookstream_stream;
    hookstream_auth_request /_auth;
}
location /v1/down {
    hookstream_stream;
    hookstream_auth_request /_down;
}
location /v1/slow {
    hookstream_stream;
    hookstream_auth_request /_slow;
}
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
location = /_down {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_DEAD_PORT/auth;
}
location = /_slow {
    internal;
    proxy_read_timeout 300ms;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('live');
my $err = make_api_key('live');
my $noorg = make_api_key('live');
my $badorg = make_api_key('live');
main::authority_config({ $key => { org => $main::org1, delay => 1 },
                         $err => { status => 500 },
                         $noorg => { },
                         $badorg => { org => 'org_XYZ' } });

my $c = ws_connect("/v1/down?token=$key");
is $c->status, 503, "authority down: 503";
is $c->json->{status}, 503, "JSON body";

$c = ws_connect("/v1/down?token=$key");
is $c->status, 503, "again 503: failures are not cached";

$c = ws_connect("/v1/slow?token=$key");
is $c->status, 503, "authority too slow: 503";

$c = ws_connect("/v1/ws?token=$err");
is $c->status, 503, "authority answered 500: 503";

$c = ws_connect("/v1/ws?token=$noorg");
is $c->status, 503, "2xx without X-Hookstream-Org: 503";

$c = ws_connect("/v1/ws?token=$badorg");
is $c->status, 503, "2xx with an invalid org: 503";

is main::asked($err), 1, "asked about the key that got 500";

$c = ws_connect("/v1/ws?token=$err");
is $c->status, 503, "still 503";
is main::asked($err), 2, "an error is not cached: asked again";

# the slow one still works with a patient location
$c = ws_connect("/v1/ws?token=$key");
ok $c->upgraded, "upgraded when the authority takes its time";
--- error_log eval
[qr/hookstream_auth_request "\/_down" answered 502 for sha256:[0-9a-f]{8}\.\.\., refusing the credential/,
 qr/hookstream_auth_request "\/_slow" answered 504/,
 qr/hookstream_auth_request "\/_auth" answered 500/,
 qr/hookstream_auth_request "\/_auth" answered 200 without a valid X-Hookstream-Org/]
--- no_error_log
[warn]



=== TEST 8: revocation closes live connections in every worker with 4001
--- workers: 2
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location = /_auth {
        internal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
    }
}
--- config
location /internal/publish { hookstream_publish; }
--- ws
my $key = make_api_key('live');
my $other = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 },
                         $other => { org => $main::org1 } });

my (@revoked, @kept);

for (1 .. 16) {
    my $c = ws_connect("/v1/ws?token=$key", port => $ENV{TEST_NGINX_PORT2});
    is main::welcome_org($c), $main::org1, "connection $_ of the key";
    push @revoked, $c;
}

for (1 .. 4) {
    my $c = ws_connect("/v1/ws?token=$other",
                       port => $ENV{TEST_NGINX_PORT2});
    is main::welcome_org($c), $main::org1, "connection $_ of another key";
    push @kept, $c;
}

is main::asked(), 2, "two questions";

# the backend revokes the key and tells nginx
main::authority_config({ $other => { org => $main::org1 } });

my $r = http_post('/internal/publish',
                  encode_json({ type => 'revoke',
                                key_hash => sha256_hex($key) }));
is $r->status, 200, "revoke published";
is $r->json->{published}, 1, "counted as published";

for my $c (@revoked) {
    my ($code, $reason) = $c->recv_close(5);
    is $code, 4001, "closed with 4001";
    is $reason, "credential revoked", "reason";
}

ok main::pids_logging(qr/hookstream: the credential sha256:[0-9a-f]+\.\.\. of this connection was revoked/)
   >= 2, "connections closed in both workers";

# the other key's connections are untouched
$r = http_post('/internal/publish',
               encode_json({ org_id => $main::org1, type => 'delivery',
                             channel => 'deliveries', data => { n => 1 } }));
is $r->json->{published}, 1, "a message for the org";

for my $c (@kept) {
    my $m = $c->recv_json_until(sub { $_[0]{type} eq 'delivery' }, 5);
    ok $m, "another key's connection still receives";
}

# the cache entry is gone: the next connection asks, and is refused
my $c = ws_connect("/v1/ws?token=$key", port => $ENV{TEST_NGINX_PORT2});
is $c->status, 401, "reconnecting with the revoked key: 401";
is main::asked($key), 1, "the authority was asked again";

# with "session_hash" and a "sha256:" prefix; bad lines are errors
$r = http_post('/internal/publish',
               encode_json({ type => 'revoke',
                             session_hash => 'sha256:' . ('ab' x 32) })
               . "\n"
               . encode_json({ type => 'revoke', key_hash => 'abc' })
               . "\n"
               . encode_json({ type => 'revoke' }) . "\n");
is $r->json->{published}, 1, "one good revoke line";
is scalar @{ $r->json->{errors} }, 2, "two bad ones";
like $r->json->{errors}[0]{error}, qr/64 hex/, "a short hash";
like $r->json->{errors}[1]{error}, qr/missing/, "no hash";
--- error_log
credential sha256:
--- no_error_log
[error]
[warn]



=== TEST 9: revoking a key of the directory closes its connections
--- workers: 2
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
}
--- config
location /internal/publish { hookstream_publish; }
--- user_files eval
[ ['dir.json', directory_json({ $main::org1 => { api_keys => ['hs_live_' . ('5e' x 32)] } })] ]
--- ws
my $key = 'hs_live_' . ('5e' x 32);
my @c;

for (1 .. 8) {
    push @c, ws_connect("/v1/ws?token=$key", port => $ENV{TEST_NGINX_PORT2});
    is main::welcome_org($c[-1]), $main::org1, "connection $_";
}

my $r = http_post('/internal/publish',
                  encode_json({ type => 'revoke',
                                key_hash => uc sha256_hex($key) }));
is $r->json->{published}, 1, "revoke published";

for my $c (@c) {
    my ($code) = $c->recv_close(5);
    is $code, 4001, "closed with 4001";
}
--- no_error_log
[error]
[warn]



=== TEST 10: X-Hookstream-Sources decides who may send to a source
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
--- config
location /v1/ws/source/ { hookstream_source; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('live');
my $nolist = make_api_key('live');
main::authority_config({ $key => { org => $main::org1,
                                   sources => ['src_' . ('0' x 32), $main::src1] },
                         $nolist => { org => $main::org1 } });

my $c = ws_connect("/v1/ws/source/$main::src1?token=$key");
ok $c->upgraded, "a listed source: upgraded" or diag $c->status, $c->body;
$c->send_text('{"type":"order.created","data":{"n":1}}');
my $m = $c->recv_json;
is $m->{type}, "ack", "an event is acked";

my $req = main::authority_stats()->{requests}[0];
is main::header_of($req, 'X-Hookstream-Source'), $main::src1,
   "the source was named to the authority";

$c = ws_connect("/v1/ws/source/$main::src2?token=$key");
is $c->status, 403, "a source not listed: 403";

$c = ws_connect("/v1/ws/source/$main::src1?token=$nolist");
is $c->status, 404, "no list: the source is not known";

is main::asked($key), 2, "one question per source";
$c = ws_connect("/v1/ws/source/$main::src1?token=$key");
ok $c->upgraded, "cached per source";
is main::asked($key), 2, "no new question";
--- no_error_log
[error]
[warn]



=== TEST 11: too many failed credentials from one address: 429
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
hookstream_auth_fail_limit 20;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $good = make_api_key('live');
main::authority_config({ $good => { org => $main::org1 } });

my @status;

for (1 .. 24) {
    my $c = ws_connect("/v1/ws?token=" . make_api_key('live'));
    push @status, $c->status;
}

is_deeply [@status[0 .. 19]], [(401) x 20], "20 failures are answered";
is $status[23], 429, "then 429" or diag "@status";

my $c = ws_connect("/v1/ws?token=$good");
is $c->status, 429, "even a good key is not tried";
like $c->header('Retry-After'), qr/^[1-9]\d*$/, "Retry-After";
is $c->json->{error}, "Too many failed credentials", "message";
is main::asked($good), 0, "the authority was not asked";
ok main::asked() <= 21, "at most 21 questions for 24 bad keys";

# no credential at all is not a failed one, and is answered as such
my $d = ws_connect("/v1/ws");
is $d->status, 401, "no credential: 401";

sleep $c->header('Retry-After') + 0.2;

$c = ws_connect("/v1/ws?token=$good");
ok $c->upgraded, "the address may try again after Retry-After"
    or diag $c->status;
--- error_log
client sent more than 20 bad credentials a minute
--- no_error_log
[error]
[warn]



=== TEST 12: a bad handshake is answered before anything is asked
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 } });

my $r = http_get("/v1/ws?token=$key");
is $r->status, 400, "not a WebSocket: 400";

my $c = ws_connect("/v1/ws?token=$key", version => 8);
is $c->status, 426, "wrong version: 426";
is_deeply [$c->response->header_values('Sec-WebSocket-Version')], ['13'],
   "one Sec-WebSocket-Version header";

is main::asked(), 0, "the authority was not asked";
--- no_error_log
[error]
[warn]



=== TEST 13: the directory first, then the authority
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_auth_request /_auth;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- user_files eval
[ ['dir.json', directory_json({ $main::org2 => { api_keys => ['hs_test_' . ('1f' x 32)] } })] ]
--- ws
my $dirkey = 'hs_test_' . ('1f' x 32);
my $key = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 },
                         $dirkey => { org => $main::org1 } });

my $c = ws_connect("/v1/ws?token=$dirkey");
is main::welcome_org($c), $main::org2, "the directory's answer";
is main::asked(), 0, "without asking";

$c = ws_connect("/v1/ws?token=$key");
is main::welcome_org($c), $main::org1, "the authority's answer";
is main::asked(), 1, "asked about the other key";
--- no_error_log
[error]
[warn]



=== TEST 14: configuration errors
--- http_config
hookstream_auth_request _auth;
--- config
location /t { return 204; }
--- must_die
--- error_log
invalid URI "_auth"



=== TEST 15: a TTL of zero is refused
--- http_config
hookstream_auth_cache 0 10s;
--- config
location /t { return 204; }
--- must_die
--- error_log
invalid time "0" for allowed credentials



=== TEST 16: an answer that was on its way during a revocation is asked again
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
--- config
location /v1/ws { hookstream_stream; }
location /internal/publish { hookstream_publish; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my $key = make_api_key('live');
main::authority_config({ $key => { org => $main::org1 } }, delay => 0.6);

# the handshake goes out, a revocation comes while it is being asked
my ($ios, $status);

my $pid = fork // die "fork: $!";

if ($pid == 0) {
    sleep 0.3;
    http_post('/internal/publish',
              encode_json({ type => 'revoke',
                            key_hash => sha256_hex(make_api_key('live')) }));
    POSIX::_exit(0);
}

($ios, $status) = main::concurrent_connects("/v1/ws?token=$key", 1);
waitpid $pid, 0;

is $status->[0], 101, "upgraded";
is main::asked($key), 2, "asked again after the revocation";
--- error_log
a revocation came while asking about sha256:
--- no_error_log
[error]
[warn]



=== TEST 17: the cache keeps at most hookstream_auth_cache_max answers
--- http_config
hookstream_zone hookstream 8m;
hookstream_auth_request /_auth;
hookstream_auth_cache_max 4;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my @keys = map { make_api_key('live') } 1 .. 6;
main::authority_config({ map { $_ => { org => $main::org1 } } @keys });

for my $k (@keys) {
    ok ws_connect("/v1/ws?token=$k")->upgraded, "a key";
}

is main::asked(), 6, "six questions";

ok ws_connect("/v1/ws?token=$keys[5]")->upgraded, "the last key";
is main::asked(), 6, "is a hit";

ok ws_connect("/v1/ws?token=$keys[0]")->upgraded, "the first key";
is main::asked(), 7, "was evicted";
--- no_error_log
[error]
[warn]



=== TEST 18: a full zone evicts the oldest answers, quietly
--- http_config
hookstream_zone hookstream 512k;
hookstream_auth_request /_auth;
hookstream_auth_cache_max 100000;
--- config
location /v1/ws { hookstream_stream; }
location = /_auth {
    internal;
    proxy_pass http://127.0.0.1:$TEST_NGINX_AUTH_PORT/auth;
}
--- ws
my @keys = map { make_api_key('live') } 1 .. 3000;
main::authority_config({ map { $_ => { org => $main::org1 } } @keys });

my $ok = 0;

for my $k (@keys) {
    my (undef, $st) = main::concurrent_connects("/v1/ws?token=$k", 1);
    $ok++ if $st->[0] == 101;
}

is $ok, 3000, "3000 keys, each upgraded";
is main::asked(), 3000, "3000 questions";

ok ws_connect("/v1/ws?token=$keys[2999]")->upgraded, "the last key";
is main::asked(), 3000, "is still cached";

ok ws_connect("/v1/ws?token=$keys[0]")->upgraded, "the first key";
is main::asked(), 3001, "was evicted to make room";
--- no_error_log
[error]
[warn]
[crit]
