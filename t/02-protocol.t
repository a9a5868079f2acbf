# RFC 6455 on a live connection, over plain TCP and TLS: acks and errors
# on the inbound source endpoint, ping/pong, the close handshake,
# fragmentation with interleaved control frames, UTF-8 across fragments,
# every invalid frame closing with the RFC's code, size limits, and
# pipelining.

use Test::Hookstream;
use Test::Hookstream::WS qw(:opcodes);

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('test');

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

$main::path = "/v1/ws/source/$SRC?token=$KEY";
$main::path .= '';

# a connection that must be failed with $code, then see TCP closed
sub fails_with {
    my ($c, $code, $name) = @_;

    my ($got, $reason, $closed) = $c->recv_close(5);
    is $got, $code, "$name: close $code";
    ok $closed, "$name: TCP connection closed";
}

sub acked {
    my ($c, $name) = @_;

    my $m = $c->recv_json(5);
    ok $m && $m->{type} eq 'ack' && $m->{event_id} =~ /^evt_[0-9a-f]{32}$/,
       "$name: acked" or diag explain $m;
    return $m;
}

$main::fails_with = \&fails_with;
$main::acked = \&acked;

workers(2);
run_tests();

__DATA__

=== TEST 1: events are acked in order with fresh ids; bad input gets errors
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $c = ws_connect($main::path);
ok $c->upgraded, "upgraded";

my %seen;
for my $n (1 .. 3) {
    $c->send_text(qq({"type":"order.created","data":{"n":$n}}));
    my $m = $main::acked->($c, "event $n");
    $seen{$m->{event_id}}++;
    ok !exists $m->{durable} || $m->{durable} == 0, "no journal: durable false";
}
is scalar keys %seen, 3, "three distinct ids";

for my $case (['not json {', 'invalid_json'], ['[1,2]', 'invalid_event'],
              ['"a string"', 'invalid_event'], ['42', 'invalid_event'])
{
    $c->send_text($case->[0]);
    my $m = $c->recv_json;
    is $m->{type}, 'error', "$case->[0]: error";
    is $m->{data}{code}, $case->[1], "$case->[0]: $case->[1]";
    ok length $m->{data}{message}, "$case->[0]: a message";
}

$c->send_binary('{"type":"x"}');
my $m = $c->recv_json;
is $m->{data}{code}, 'binary_not_supported', "binary message: error";

$c->send_text('{"type":"still.open"}');
$main::acked->($c, "the connection stayed open");
--- no_error_log
[error]



=== TEST 2: ping gets a pong with its payload; unsolicited pongs are ignored
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $c = ws_connect($main::path);

$c->send_ping('hello ping');
my $f = $c->recv_frame;
is $f->{opcode}, OP_PONG, "pong";
is $f->{payload}, 'hello ping', "same payload";

$c->send_ping('');
$f = $c->recv_frame;
is $f->{opcode}, OP_PONG, "pong to an empty ping";
is $f->{payload}, '', "empty payload";

$c->send_ping('x' x 125);
$f = $c->recv_frame;
is $f->{payload}, 'x' x 125, "125-byte ping echoed";

$c->send_pong('unsolicited');
$c->send_text('{"a":1}');
$f = $c->recv_frame;
is $f->{opcode}, OP_TEXT, "nothing answers an unsolicited pong";
like $f->{payload}, qr/"ack"/, "the next message is acked";



=== TEST 3: the close handshake: echoed code, then the server closes TCP
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
for my $code (1000, 1001, 3000, 4999) {
    my $c = ws_connect($main::path);
    $c->send_close($code, "bye");
    my ($got, $reason, $closed) = $c->recv_close(5);
    is $got, $code, "close $code echoed";
    ok $closed, "close $code: TCP closed by the server";
}

my $c = ws_connect($main::path);
$c->send_close();
my ($got, $reason, $closed) = $c->recv_close(5);
ok !defined $got || $got == 1005 || $got == 0,
   "an empty close is answered without a code";
ok $closed, "empty close: TCP closed";

# data after the close frame is not answered
$c = ws_connect($main::path);
$c->send_frames({ opcode => OP_CLOSE, payload => pack('n', 1000) },
                { opcode => OP_TEXT, payload => '{"late":1}' });
($got, $reason, $closed) = $c->recv_close(5);
is $got, 1000, "close answered";
ok !grep({ $_->{opcode} == OP_TEXT } $c->skipped),
   "the message behind the close is not acked";



=== TEST 4: invalid close frames fail the connection with 1002 or 1007
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
for my $code (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535) {
    my $c = ws_connect($main::path);
    $c->send_frame(opcode => OP_CLOSE, payload => pack('n', $code));
    $main::fails_with->($c, 1002, "close code $code");
}

my $c = ws_connect($main::path);
$c->send_frame(opcode => OP_CLOSE, payload => "\x03");
$main::fails_with->($c, 1002, "1-byte close payload");

$c = ws_connect($main::path);
$c->send_frame(opcode => OP_CLOSE, payload => pack('n', 1000) . "\xff\xfe");
$main::fails_with->($c, 1007, "close reason not UTF-8");
--- error_log
client sent an invalid WebSocket frame



=== TEST 5: malformed frames: 1002, then the TCP connection is closed
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my @cases = (
    [ 'unmasked frame',        [{ opcode => OP_TEXT, payload => '{}', mask => 0 }] ],
    [ 'RSV1 without deflate',  [{ opcode => OP_TEXT, payload => '{}', rsv => 4 }] ],
    [ 'RSV2',                  [{ opcode => OP_TEXT, payload => '{}', rsv => 2 }] ],
    [ 'RSV3',                  [{ opcode => OP_TEXT, payload => '{}', rsv => 1 }] ],
    [ 'opcode 3',              [{ opcode => 3, payload => 'x' }] ],
    [ 'opcode 0xB',            [{ opcode => 0xB, payload => 'x' }] ],
    [ 'ping of 126 bytes',     [{ opcode => OP_PING, payload => 'x' x 126 }] ],
    [ 'fragmented ping',       [{ opcode => OP_PING, payload => 'x', fin => 0 }] ],
    [ 'lone continuation',     [{ opcode => OP_CONT, payload => 'x' }] ],
    [ 'text inside a message', [{ opcode => OP_TEXT, payload => '{', fin => 0 },
                                { opcode => OP_TEXT, payload => '}' }] ],
    [ '64-bit length, top bit', [{ opcode => OP_BINARY, payload => '',
                                   len_override => '9223372036854775808',
                                   len_form => 64 }] ],
);

for my $case (@cases) {
    my ($name, $frames) = @$case;
    my $c = ws_connect($main::path);
    $c->send_frames(@$frames);
    $main::fails_with->($c, 1002, $name);
}



=== TEST 6: fragments with a ping between them, UTF-8 split across frames
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $c = ws_connect($main::path);

$c->send_fragmented(OP_TEXT, ['{"type":"frag', 'mented","n":', '1}'],
                    interleave => { after => 0, opcode => OP_PING,
                                    payload => 'between' });
my $f = $c->recv_frame;
is $f->{opcode}, OP_PONG, "the ping between fragments is answered first";
is $f->{payload}, 'between', "with its payload";
$main::acked->($c, "the fragmented message");

# "é" is C3 A9, "€" is E2 82 AC: split them across frames
$c->send_fragmented(OP_TEXT, ["{\"name\":\"caf\xc3", "\xa9 \xe2\x82", "\xac\"}"]);
$main::acked->($c, "a character split across fragments");

$c->send_fragmented(OP_TEXT, ['{"a":', '', '1}']);
$main::acked->($c, "an empty fragment in the middle");

$c->send_fragmented(OP_TEXT, ["{\"bad\":\"\xc3", "\x28\"}"]);
$main::fails_with->($c, 1007, "invalid UTF-8 across fragments");

$c = ws_connect($main::path);
$c->send_text("{\"bad\":\"\xed\xa0\x80\"}");
$main::fails_with->($c, 1007, "a surrogate");

$c = ws_connect($main::path);
$c->send_fragmented(OP_TEXT, ["{\"x\":\"\xe2\x82"]);
$c->send_frame(opcode => OP_CONT, payload => '', fin => 1);
$main::fails_with->($c, 1007, "a message ending inside a character");



=== TEST 7: a 70 KB message with a 64-bit length; the size limit, exactly
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
location /small/ {
    hookstream_source;
    hookstream_max_message 1k;
}
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $c = ws_connect($main::path);
my $big = '{"pad":"' . ('x' x 70000) . '"}';
$c->send_text($big);
$main::acked->($c, "70 KB message");

(my $small = $main::path) =~ s{^/v1/ws/source/}{/small/};

my $exact = '{"p":"' . ('y' x (1024 - 8)) . '"}';
is length $exact, 1024, "a message of exactly 1k";

$c = ws_connect($small);
$c->send_text($exact);
$main::acked->($c, "exactly the limit");

$c->send_text('{"p":"' . ('y' x (1024 - 7)) . '"}');
$main::fails_with->($c, 1009, "one byte over, one frame");

$c = ws_connect($small);
$c->send_fragmented(OP_TEXT, ['{"p":"' . ('z' x 500), ('z' x 516) . '"}']);
$main::acked->($c, "exactly the limit in fragments");

$c->send_fragmented(OP_TEXT, ['{"p":"' . ('z' x 500), ('z' x 517) . '"}']);
$main::fails_with->($c, 1009, "one byte over across fragments");

$c = ws_connect($small);
$c->send_frame(opcode => OP_TEXT, payload => '',
               len_override => '4611686018427387904', len_form => 64);
$main::fails_with->($c, 1009, "a 2^62 length");
--- error_log
client sent an invalid WebSocket frame



=== TEST 8: 100 pipelined messages in one write: 100 acks, in order
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
my $c = ws_connect($main::path);

$c->send_frames(map { { opcode => OP_TEXT,
                        payload => $_ % 10 == 0 ? "bad $_"
                                                : qq({"n":$_}) } } 1 .. 100);
my (@types, %ids);
for my $n (1 .. 100) {
    my $m = $c->recv_json(5);
    push @types, $m ? $m->{type} : 'none';
    $ids{$m->{event_id}}++ if $m && $m->{event_id};
}

my @want = map { $_ % 10 == 0 ? 'error' : 'ack' } 1 .. 100;
is_deeply \@types, \@want, "acks and errors in the order of the messages";
is scalar keys %ids, 90, "90 distinct event ids";

# byte by byte: every partial read
$c->send_slowly(Test::Hookstream::WS->build_frame(opcode => OP_TEXT,
                                                  payload => '{"slow":1}'),
                chunk => 1, delay => 0.002);
$main::acked->($c, "a frame sent one byte at a time");



=== TEST 9: input pending after a protocol error: close frame, then TCP close
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- tls
--- ws
# the bad frame, then 256 KB the server will never parse: the server
# takes its lingering close path (shut its side down, drain the rest),
# which must still end in the close frame and then the TCP close
for my $round (1 .. 3) {
    my $c = ws_connect($main::path);
    ok $c->upgraded, "upgraded ($round)";

    $c->send_frames({ opcode => OP_TEXT, payload => '{}', rsv => 2 },
                    map { { opcode => OP_BINARY, payload => 'x' x 65536 } }
                    1 .. 4);
    $main::fails_with->($c, 1002, "bad frame with data behind it ($round)");
}
