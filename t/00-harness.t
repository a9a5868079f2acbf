# The harness checking itself: Test::Hookstream's sections and server
# lifecycle against plain nginx directives (the hookstream module is not
# loaded here), and Test::Hookstream::WS against an independent WebSocket
# server (Python's websockets) and an independent codec
# (Protocol::WebSocket::Frame).

use Test::Hookstream;

use File::Temp ();
use Protocol::WebSocket::Frame;
use Test::Hookstream::WS qw(:opcodes);

no_module();

# ---------------------------------------------------------------------------
# the codec against Protocol::WebSocket

for my $len (0, 1, 125, 126, 65535, 65536, 70000) {
    my $payload = join '', map { chr(($_ * 7) % 256) } 1 .. $len;
    my $key = pack 'N', 0x1a2b3c4d;

    my $theirs = Protocol::WebSocket::Frame->new(
        buffer           => $payload,
        type             => 'binary',
        masked           => 1,
        mask             => 0x1a2b3c4d,
        max_payload_size => 0,
    )->to_bytes;

    my $ours = Test::Hookstream::WS->build_frame(
        opcode   => OP_BINARY,
        payload  => $payload,
        mask_key => $key,
    );

    ok $ours eq $theirs, "build_frame matches Protocol::WebSocket, $len bytes";

    my $f = Protocol::WebSocket::Frame->new(max_payload_size => 0);
    $f->append(Test::Hookstream::WS->build_frame(opcode => OP_TEXT,
                                                  payload => $payload));
    my $got = $f->next_bytes;
    ok defined $got && $got eq $payload && $f->opcode == OP_TEXT,
       "Protocol::WebSocket decodes our masked frame, $len bytes";
}

{
    my $b = Test::Hookstream::WS->build_frame(payload => 'x', mask => 0,
                                              len_form => 64, fin => 0,
                                              rsv => 5, opcode => 0xB);
    is unpack('H*', $b), '5b' . '7f' . '0000000000000001' . '78',
       'build_frame: non-minimal length, rsv bits, reserved opcode, no mask';

    $b = Test::Hookstream::WS->build_frame(payload => 'abc', mask => 0,
                                           len_override => 1000);
    is unpack('H*', substr($b, 0, 4)), '817e03e8',
       'build_frame: len_override writes a lying length';
}

# ---------------------------------------------------------------------------
# fixtures

{
    my $key = make_api_key('live');
    like $key, qr/^hs_live_[0-9a-f]{64}$/, 'make_api_key';

    my $dir = decode_json(directory_json({
        'org_' . ('a' x 32) => {
            api_keys => [$key],
            sources  => ['src_' . ('b' x 32)],
        },
    }));

    is_deeply $dir->{orgs}{'org_' . ('a' x 32)}{api_keys},
              ['sha256:' . sha256_hex($key)],
              'directory_json stores the hash of the key';
    like random_hex(32), qr/^[0-9a-f]{32}$/, 'random_hex';
}

# ---------------------------------------------------------------------------
# a reference WebSocket server: Python's websockets, plain and TLS

my $echo_port = free_port();
my $echo_tls_port = free_port();

my $py = File::Temp->new(SUFFIX => '.py');
print {$py} <<'PY';
import asyncio, ssl, sys
import websockets

port, tls_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), \
    sys.argv[3], sys.argv[4]

async def handler(ws, path):
    if path == "/close4000":
        await ws.close(code=4000, reason="bye")
        return
    if path == "/hello":
        await ws.send('{"type":"welcome","n":1}')
    async for m in ws:
        await ws.send(m)

async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    async with websockets.serve(handler, "127.0.0.1", port,
                                max_size=None, ping_interval=None), \
               websockets.serve(handler, "127.0.0.1", tls_port, ssl=ctx,
                                max_size=None, ping_interval=None):
        await asyncio.Future()

asyncio.run(main())
PY
close $py;

my $echo_pid = start_process(['/usr/bin/python3', "$py", $echo_port,
                              $echo_tls_port, tls_cert(), tls_key()],
                             wait_port => $echo_port, timeout => 10);

ok $echo_pid && wait_for_port($echo_tls_port, 5),
   'python websockets echo server is up'
    or BAIL_OUT('cannot test the WebSocket client without the echo server');

$ENV{TEST_NGINX_ECHO_PORT} = $echo_port;
$ENV{TEST_NGINX_ECHO_TLS_PORT} = $echo_tls_port;

# ---------------------------------------------------------------------------
# the harness telling failures apart: a child test file whose blocks are
# meant to fail, run through the harness, its TAP read back

{
    my $dir = File::Temp->newdir;
    my $child = "$dir/child.t";

    open my $fh, '>', $child or die $!;
    print {$fh} <<'CHILD';
use Test::Hookstream;
no_module();
run_tests();
__DATA__

=== TEST 1: wrong status
--- config
location /t { return 204; }
--- request
GET /t
--- error_code: 200

=== TEST 2: a worker killed
--- config
location /t { return 200; }
--- ws
kill_worker();

=== TEST 3: a line that should not be there
--- config
location /t { return 404; }
--- request
GET /nope
--- no_error_log
[error]

=== TEST 4: must_die on a good configuration
--- config
location /t { return 200; }
--- must_die

=== TEST 5: a ws snippet that dies
--- config
location /t { return 200; }
--- ws
die "on purpose\n";

=== TEST 6: a sanitizer report
--- config
location /t { return 200; }
--- ws
open my $fh, '>', servroot() . "/logs/ubsan.4242" or die;
print {$fh} "x.c:1:2: runtime error: signed integer overflow\n";
close $fh;

=== TEST 7: all fine
--- config
location /t { return 200 "ok"; }
--- request
GET /t
--- response_body chomp
ok
CHILD
    close $fh;

    local $ENV{HOOKSTREAM_KEEP};
    my $tap = `$^X -I${\ repo_root()}/t/lib $child 2>&1`;

    my %not_ok = map { /^not ok \d+ - (.*)$/ ? ($1 => 1) : () }
                 split /\n/, $tap;

    ok $not_ok{'TEST 1: wrong status - status code ok'},
       'harness: a wrong status fails';
    ok $not_ok{'TEST 2: a worker killed - no [alert], [crit], [emerg] or '
               . 'sanitizer report'},
       'harness: an [alert] in the error log fails the block';
    ok $not_ok{q{TEST 3: a line that should not be there - error log lacks }
               . q{'[error]'}},
       'harness: no_error_log fails on a matching line';
    ok $not_ok{'TEST 4: must_die on a good configuration - nginx should '
               . 'have refused to start'},
       'harness: must_die fails when nginx starts';
    ok $not_ok{'TEST 5: a ws snippet that dies - ws snippet ran to its end'},
       'harness: a dying ws snippet fails';
    ok $not_ok{'TEST 6: a sanitizer report - no [alert], [crit], [emerg] '
               . 'or sanitizer report'},
       'harness: a sanitizer log file fails the block';
    ok !grep({ /^TEST 7/ } keys %not_ok), 'harness: a good block passes'
        or diag $tap;
    like $tap, qr/^1\.\.\d+$/m, 'harness: child printed its plan'
        or diag $tap;
    is scalar(keys %not_ok), 6, 'harness: exactly six failures'
        or diag $tap;
}

# what a snippet may use from this file: subs, and package variables
# declared with "use vars"
use vars qw($FROM_FILE);
$FROM_FILE = 'file variable';

sub from_file { return "file sub: @_" }

run_tests();

__DATA__

=== TEST 1: status, body, headers
--- config
location /t {
    add_header X-Test "yes";
    return 200 "hi\n";
}
--- request
GET /t
--- error_code: 200
--- response_headers
Content-Type: text/plain
X-Test: yes
!X-Absent
--- response_body
hi
--- no_error_log
[warn]
[error]



=== TEST 2: chomp filter and single-line sections
--- config
location /t { return 200 "hi"; }
--- request: GET /t
--- error_code: 200
--- response_body chomp
hi



=== TEST 3: request body and more_headers
--- config
location /post {
    return 200 "len=$http_content_length foo=$http_x_foo m=$request_method";
}
--- request
POST /post
hello world
--- more_headers
X-Foo: bar
--- response_body chomp
len=11 foo=bar m=POST
--- access_log
"POST /post HTTP/1.1" 200



=== TEST 4: eval sections, $TEST_NGINX_ variables
--- config eval
"location /t { return 200 'port=\$server_port ours=$TEST_NGINX_PORT'; }"
--- request
GET /t
--- response_body eval
"port=$TEST_NGINX_PORT ours=$TEST_NGINX_PORT"



=== TEST 5: raw_request, HTTP/1.0, response_body_like
--- config
location /t { return 200 "proto=$server_protocol"; }
--- raw_request eval
"GET /t HTTP/1.0\r\n\r\n"
--- error_code: 200
--- response_body_like
^proto=HTTP/1\.0$



=== TEST 6: raw_request in pieces
--- config
location /t { return 200 "got $http_x_late"; }
--- raw_request eval
["GET /t HTTP/1.1\r\nHost: localhost\r\n",
 "X-Late: 1\r\nConnection: close\r\n",
 "\r\n"]
--- raw_request_delay: 0.1
--- response_body chomp
got 1



=== TEST 7: a bad request line gets 400
--- config
location /t { return 200; }
--- raw_request eval
"GARBAGE\r\n\r\n"
--- error_code: 400
--- error_log
client sent invalid method



=== TEST 8: error_log with strings and regexes
--- config
location /t { root $TEST_NGINX_DATA_DIR; }
--- request
GET /t/missing.txt
--- error_code: 404
--- error_log eval
[qr/\[error\] \d+#\d+: \*\d+ open\(\) ".*missing\.txt" failed/,
 "No such file or directory"]
--- no_error_log
[alert]



=== TEST 9: user_files, static files and chunked responses
--- config
location /files/ { alias $TEST_NGINX_DATA_DIR/; }
location /ssi/ { ssi on; alias $TEST_NGINX_DATA_DIR/; }
--- user_files
>>> plain.txt
plain file
>>> dir/page.html
A<!--# echo var="uri" -->B
--- ws
my $r = http_get("/files/plain.txt");
is $r->status, 200, "static file";
is $r->body, "plain file\n", "static body";

$r = http_get("/ssi/dir/page.html");
is $r->header('Transfer-Encoding'), 'chunked', "ssi answer is chunked";
is $r->body, "A/ssi/dir/page.htmlB\n", "chunked body decoded";

ok -f data_dir() . "/dir/page.html", "user file under data_dir()";



=== TEST 10: the data dir starts empty in every block
--- config
location /t { return 200; }
--- ws
ok !-e data_dir() . "/plain.txt", "previous block's files are gone";



=== TEST 11: main, http and events config
--- main_config
thread_pool hs_test threads=2;
--- events_config
multi_accept on;
--- http_config
map $uri $mapped { default "mapped:$uri"; }
--- config
location /m { return 200 $mapped; }
--- request
GET /m
--- response_body chomp
mapped:/m



=== TEST 12: TLS pass of a request
--- config
location /s { return 200 "$scheme"; }
--- request
GET /s
--- tls
--- error_code: 200
--- response_body_like: ^https?$



=== TEST 13: response_headers eval and response_headers_like
--- config
location /t {
    add_header X-A "alpha";
    return 200;
}
--- request
GET /t
--- response_headers eval
{ 'X-A' => 'alpha', 'X-None' => undef }
--- response_headers_like
Server: ^nginx/1\.\d+



=== TEST 14: must_die names the bad directive
--- config
location /t { hookstream_no_such_directive on; }
--- must_die
--- error_log
unknown directive "hookstream_no_such_directive"



=== TEST 15: ws_connect to a location that does not upgrade
--- config
location /deny {
    default_type application/json;
    return 403 '{"error":"Forbidden","status":403}';
}
location /old {
    add_header Sec-WebSocket-Version 13 always;
    default_type application/json;
    return 426 '{"error":"Upgrade Required","status":426}';
}
--- tls
--- ws
my $c = ws_connect("/deny?token=x");
ok !$c->upgraded, "not upgraded";
is $c->status, 403, "403 answer";
is $c->json->{status}, 403, "JSON body";
is $c->header('Content-Type'), 'application/json', "content type";

$c = ws_connect("/old", version => 8);
is $c->status, 426, "426 answer";
is $c->header('Sec-WebSocket-Version'), '13', "version advertised";

ok !eval { $c->send_text("x"); 1 }, "sending on a refused socket dies";
like $@, qr/not open/, "with a clear message";



=== TEST 16: workers, pids, reload, kill
--- workers: 2
--- config
location /t { return 200 "pid=$pid"; }
--- allow_error_log
exited on signal 9
--- ws
my @w = worker_pids();
is scalar(@w), 2, "two workers";
ok master_pid(), "master pid known";

my %seen;
for (1 .. 40) {
    my $r = http_get("/t");
    $seen{$1} = 1 if ($r->body // '') =~ /pid=(\d+)/;
}
ok scalar(keys %seen) >= 1, "requests served by workers";
ok !grep({ my $p = $_; !grep { $_ == $p } @w } keys %seen),
   "every answer came from a known worker";

ok reload_nginx(), "reload";
my @w2 = worker_pids();
is scalar(@w2), 2, "two new workers";
ok !grep({ my $p = $_; grep { $_ == $p } @w } @w2), "all workers replaced";

my @w3 = kill_worker($w2[0]);
is scalar(@w3), 2, "killed worker replaced";
ok !grep({ $_ == $w2[0] } @w3), "the killed one is gone";

is http_get("/t")->status, 200, "still serving";



=== TEST 17: reload with a bad configuration is refused
--- config
location /t { return 200 "one"; }
--- allow_error_log
unknown directive "bogus_directive"
--- ws
ok !reload_nginx(config => "bogus_directive on;"), "bad reload refused";
is http_get("/t")->body, "one", "old configuration still serves";

ok reload_nginx(config => 'location /t { return 200 "two"; }'),
   "good reload";
is http_get("/t")->body, "two", "new configuration serves";

ok restart_nginx(config => 'location /t { return 200 "three"; }'),
   "restart";
is http_get("/t")->body, "three", "restarted configuration serves";

like error_log_text(), qr/signal 1 \(SIGHUP\) received/, "log text";



=== TEST 18: keep-alive answers are framed, not read to the end
--- config
location /t { return 200 "framed"; }
--- ws
my $t0 = time;
my $r = http_get("/t", headers => { Connection => 'keep-alive' });
is $r->body, "framed", "body by Content-Length";
ok time - $t0 < 2, "no wait for the connection to close";



=== TEST 19: snippets see the file's subs and fractional sleep
--- config
location /t { return 200; }
--- ws
is from_file(1), "file sub: 1", "a sub of the .t file";
is $FROM_FILE, "file variable", "a 'use vars' variable of the .t file";
my $t0 = time;
sleep 0.3;
my $dt = time - $t0;
# fractional: an integer sleep(0.3) would not wait, an integer time()
# would step by whole seconds (no upper bound: a loaded machine is slow)
ok $dt > 0.2 && $dt != int $dt, "sleep and time are Time::HiRes's ($dt)";



=== TEST 20: access log helpers
--- config
location /t { return 200; }
--- ws
http_get("/t?secret=abc");
ok wait_until(sub { access_log_text() =~ /secret=abc/ }, 3),
   "access_log_text sees the request";
--- no_access_log
secret=zzz



=== TEST 21: WebSocket client against python websockets
--- config
location /t { return 200; }
--- tls
--- ws
my $port = is_tls() ? $TEST_NGINX_ECHO_TLS_PORT : $TEST_NGINX_ECHO_PORT;
my $c = ws_connect("/hello", port => $port, tls => is_tls());
ok $c->upgraded, "upgraded" or diag $c->error;
ok $c->accept_ok, "Sec-WebSocket-Accept checked";

is_deeply $c->recv_json, { type => 'welcome', n => 1 },
    "first message right after the handshake";

ok $c->send_text("hello"), "send_text";
my $f = $c->recv_frame;
is $f->{opcode}, OP_TEXT, "text frame";
is $f->{payload}, "hello", "echoed";
ok !$f->{masked}, "server frames are not masked";

$c->send_ping("p1");
$f = $c->recv_frame;
is $f->{opcode}, OP_PONG, "pong";
is $f->{payload}, "p1", "pong payload";

$c->send_text("caf\x{e9} \x{2603}");
is $c->recv_text, "caf\xc3\xa9 \xe2\x98\x83", "UTF-8 text round trip";

for my $len (125, 126, 65535, 65536, 1 << 20) {
    my $p = join '', map { chr(($_ * 13) % 256) } 1 .. $len;
    $c->send_binary($p);
    my $m = $c->recv_message(10);
    ok $m && $m->{opcode} == OP_BINARY && $m->{payload} eq $p,
       "binary round trip of $len bytes";
}

$c->send_fragmented(OP_TEXT, ["frag", "men", "ted"],
                    interleave => { after => 0, payload => "mid" });
is $c->recv_text, "fragmented", "fragmented message reassembled";
is scalar(grep { $_->{opcode} == OP_PONG } $c->controls), 1,
   "pong for the interleaved ping kept aside";

$c->send_frames(map { { opcode => OP_TEXT, payload => "m$_" } } 1 .. 50);
my @got = map { $c->recv_text } 1 .. 50;
is_deeply \@got, [map { "m$_" } 1 .. 50], "50 pipelined frames in order";

ok $c->send_slowly($c->build_frame(payload => "slow"), chunk => 1,
                   delay => 0.002), "send_slowly";
is $c->recv_text, "slow", "byte-by-byte frame";

ok !defined $c->recv_frame(0.3), "recv_frame times out";
ok $c->timed_out, "timed_out is set";

my ($code, $reason, $closed) = $c->close(1000, "done");
is $code, 1000, "close code echoed";
ok $closed, "TCP closed after the close handshake";



=== TEST 22: close, protocol errors and bad handshakes, python websockets
--- config
location /t { return 200; }
--- ws
my $port = $TEST_NGINX_ECHO_PORT;

my $c = ws_connect("/close4000", port => $port);
my ($code, $reason, $closed) = $c->recv_close;
is $code, 4000, "server close code";
is $reason, "bye", "server close reason";
ok $closed, "then the TCP connection closed";

$c = ws_connect("/", port => $port);
$c->send_frame(payload => "x", rsv => 2);
($code) = $c->recv_close;
is $code, 1002, "reserved bit: 1002";

$c = ws_connect("/", port => $port);
$c->send_frame(payload => "x", mask => 0);
($code) = $c->recv_close;
is $code, 1002, "unmasked client frame: 1002";

$c = ws_connect("/", port => $port);
$c->send_raw("\x81\x85");
$c->send_slowly("\x00\x00\x00\x00hel", chunk => 2);
$c->send_raw("lo");
is $c->recv_text, "hello", "a frame written in pieces";

$c = ws_connect("/", port => $port);
$c->send_text("\xff\xfe", compress => 0);
($code) = $c->recv_close;
is $code, 1007, "invalid UTF-8: 1007";

# websockets answers 400 here where RFC 6455 asks for 426
$c = ws_connect("/", port => $port, version => 8);
ok !$c->upgraded && $c->status >= 400, "wrong version refused";

$c = ws_connect("/", port => $port,
                headers => { 'Sec-WebSocket-Key' => undef });
is $c->status, 400, "no key: 400";

$c = ws_connect("/", port => $port, raw_handshake => "GET / HTTP/1.1\r\n"
                . "Host: localhost\r\n\r\n");
ok !$c->upgraded, "raw handshake without upgrade";
ok $c->status >= 400, "raw handshake refused";



=== TEST 23: ws_tls runs the snippet over TLS too
--- config
location /t { return 200 "$scheme"; }
--- ws_tls
--- ws
is http_get("/t")->body, is_tls() ? "https" : "http", "pass follows is_tls";
my $c = ws_connect("/t");
is $c->status, 200, "ws_connect follows the pass";



=== TEST 24: response_json and json_match
--- config
location /e {
    default_type application/json;
    return 404 '{"error":"Source not found","status":404,"request_id":"req_0a1b","n":18446744073709551615,"ok":true,"list":[1,"two"]}';
}
--- request
GET /e
--- error_code: 404
--- response_json eval
{ error => "Source not found", status => 404,
  request_id => qr/^req_[0-9a-f]+$/, list => [1, "two"],
  ok => JSON::PP::true }
--- ws
my $body = http_get("/e")->json;
is_deeply [json_match($body, { status => 404 })], [], "subset matches";
my @d = json_match($body, { status => 400, request_id => qr/^x/,
                            list => [1], missing => "y" });
is scalar(@d), 4, "four differences reported" or diag explain \@d;
like $d[0], qr/^\$\.list: 2 elements/, "paths name the field";
ok json_match($body, { ok => JSON::PP::false }), "booleans compared";



=== TEST 25: permessage-deflate against python websockets
--- config
location /t { return 200; }
--- ws
my $c = ws_connect("/", port => $TEST_NGINX_ECHO_PORT, deflate => 1);
ok $c->upgraded, "upgraded";
ok $c->deflate, "permessage-deflate negotiated";

for my $i (1 .. 3) {
    my $text = ("compressible " x 200) . $i;
    $c->send_text($text);
    my $m = $c->recv_message;
    ok $m->{compressed}, "message $i came compressed";
    is $m->{payload}, $text, "message $i inflated";
}

$c->send_text("plain", compress => 0);
is $c->recv_text, "plain", "an uncompressed message in between";
$c->close;
