# The WebSocket handshake (RFC 6455 4.2): every refusal is a plain HTTP
# answer with a JSON error body, never a 101; a good handshake gets the
# right accept value, and bytes pipelined behind it are not lost.

use Test::Hookstream;
use Test::Hookstream::WS qw(:opcodes);

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('live');

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

use vars qw($path);
$path = "/v1/ws/source/$SRC?token=$KEY";

workers(2);
run_tests();

__DATA__

=== TEST 1: a good handshake: 101 with the accept value of RFC 6455
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
# the example key and accept value of RFC 6455 section 1.3
my $c = ws_connect($main::path, key => 'dGhlIHNhbXBsZSBub25jZQ==');
ok $c->upgraded, "upgraded";
is $c->status, 101, "status 101";
is $c->header('Sec-WebSocket-Accept'), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
   "accept value";
like $c->header('Upgrade'), qr/^websocket$/i, "Upgrade: websocket";
like $c->header('Connection'), qr/\bupgrade\b/i, "Connection: Upgrade";
ok !defined $c->header('Sec-WebSocket-Protocol'), "no subprotocol chosen";
$c->send_text('{"type":"x"}');
my $m = $c->recv_json;
is $m->{type}, 'ack', 'the connection works';



=== TEST 2: refused handshakes are 400 with a JSON body
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my @bad = (
    [ 'POST',                       method => 'POST' ],
    [ 'HTTP/1.0',                   http_version => '1.0' ],
    [ 'no Upgrade',                 headers => { Upgrade => undef } ],
    [ 'Upgrade: h2c',               headers => { Upgrade => 'h2c' } ],
    [ 'no Connection',              headers => { Connection => undef } ],
    [ 'Connection: keep-alive',     headers => { Connection => 'keep-alive' } ],
    [ 'no key',                     headers => { 'Sec-WebSocket-Key' => undef } ],
    [ 'key of 15 bytes',            key => 'AAAAAAAAAAAAAAAAAAAA' ],
    [ 'key not base64',             key => '!!!!!!!!!!!!!!!!!!!!!!==' ],
);

for my $b (@bad) {
    my ($name, @opt) = @$b;
    my $c = ws_connect($main::path, @opt);
    ok !$c->upgraded, "$name: not upgraded";
    is $c->status, 400, "$name: 400";
    is $c->json && $c->json->{status}, 400, "$name: JSON body";
    like $c->json && $c->json->{request_id}, qr/^req_[0-9a-f]{32}$/,
         "$name: request_id";
}

# tokens in a list, any case
my $c = ws_connect($main::path,
                   headers => { Connection => 'keep-alive, UPGRADE',
                                Upgrade => 'WebSocket' });
ok $c->upgraded, "Connection: keep-alive, UPGRADE is enough";



=== TEST 3: a wrong or missing version is 426 naming version 13
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
for my $v ('8', '14', undef) {
    my $name = defined $v ? "version $v" : "no version";
    my $c = ws_connect($main::path,
                       headers => { 'Sec-WebSocket-Version' => $v });
    ok !$c->upgraded, "$name: not upgraded";
    is $c->status, 426, "$name: 426";
    is $c->header('Sec-WebSocket-Version'), '13', "$name: names 13";
    is $c->json && $c->json->{status}, 426, "$name: JSON body";
}



=== TEST 4: the credential and the source are checked before upgrading
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $src = $main::path =~ s/\?.*//r;

my $c = ws_connect($src);
is $c->status, 401, "no key: 401";

$c = ws_connect("/v1/ws/source/src_" . ('0' x 32) . "?token="
                . ($main::path =~ /token=(.*)/)[0]);
is $c->status, 404, "unknown source: 404";
is $c->json->{error}, "Source not found", "error text";

$c = ws_connect("/v1/ws/source/nonsense?token="
                . ($main::path =~ /token=(.*)/)[0]);
is $c->status, 404, "not a source id: 404";



=== TEST 5: frames pipelined right behind the handshake are not lost
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $frames = join '', map {
    Test::Hookstream::WS->build_frame(opcode => OP_TEXT,
                                      payload => qq({"n":$_}))
} 1 .. 3;

my $req = "GET $main::path HTTP/1.1\r\n"
          . "Host: localhost\r\n"
          . "Upgrade: websocket\r\n"
          . "Connection: Upgrade\r\n"
          . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          . "Sec-WebSocket-Version: 13\r\n\r\n";

my $c = ws_connect($main::path, raw_handshake => $req . $frames,
                   key => "dGhlIHNhbXBsZSBub25jZQ==");
ok $c->upgraded, "upgraded";

for my $n (1 .. 3) {
    my $m = $c->recv_json;
    is $m && $m->{type}, 'ack', "ack $n of the pipelined frames";
}



=== TEST 6: the request is logged at the upgrade, and the connection lives on
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
log_format ws '$request_method $uri $status';
--- config
location /v1/ws/source/ {
    access_log logs/access.log ws;
    hookstream_source;
}
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
# the plain and TLS runs of this block share one access log
my $lines = sub {
    scalar(() = access_log_text()
                =~ m{^GET /v1/ws/source/src_[0-9a-f]{32} 101$}mg);
};
my $before = $lines->();

my $c = ws_connect($main::path);
ok $c->upgraded, "upgraded";

# the access log line comes with the handshake, not at the close
ok wait_until(sub { $lines->() == $before + 1 }, 5),
   "logged with 101 while the connection is open";

# the WebSocket outlives its request: messages, then the close handshake
for my $n (1 .. 3) {
    $c->send_text(qq({"n":$n}));
    my $m = $c->recv_json;
    is $m && $m->{type}, 'ack', "ack $n after the request was released";
}

$c->send_close(1000, 'bye');
my ($code, undef, $closed) = $c->recv_close;
is $code, 1000, "close handshake completes";
ok $closed || $c->eof, "the server closes the TCP connection";

is $lines->(), $before + 1, "one access log line for the connection";
