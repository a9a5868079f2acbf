# Hostile clients: what a client controls is bounded, and answered as
# documented (docs/auth.md, "Bounds on what a client controls"), never
# with a crash, an [alert] or memory that stays taken. Slow handshakes,
# a 2^63 frame length, endless continuation frames, a ping flood from a
# client that does not read, thousands of subscriptions, a message rate
# over hookstream_client_rate, sockets half-closed or reset mid-frame.
# Every block checks that the workers it started are the ones still
# running; the last one also that their memory comes back.
#
# make test-asan runs this file under AddressSanitizer too.

use Test::Hookstream;

use IO::Socket::INET ();
use Time::HiRes qw(time sleep);
use Socket qw(SOL_SOCKET SO_LINGER SHUT_WR);
use Test::Hookstream::WS qw(:opcodes);

my $ORG = 'org_' . ('6a' x 16);
my $KEY = 'hs_live_' . ('3c' x 32);
my $SRC = 'src_' . ('9d' x 16);

$ENV{TEST_NGINX_DIRJSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

our ($org, $key, $src) = ($ORG, $KEY, $SRC);

workers(2);

sub dashboard {
    my (%o) = @_;

    my $c = ws_connect("/v1/ws?token=$KEY", %o);

    die "no dashboard: " . ($c->status // $c->error) . "\n"
        if !$c->upgraded;

    my $m = $c->recv_json_until(sub { $_[0]{type} eq 'welcome' }, 5);
    die "no welcome\n" if !$m;

    return $c;
}

sub source {
    my $c = ws_connect("/v1/ws/source/$SRC?token=$KEY");

    die "no source connection: " . ($c->status // $c->error) . "\n"
        if !$c->upgraded;

    return $c;
}

# a fresh client is served while something else goes on
sub responsive {
    my $t = time;
    my $c = eval { dashboard(timeout => 3) };

    return $c && time - $t < 3 ? 1 : 0;
}

sub rss_kb {
    my $kb = 0;

    for my $pid (worker_pids()) {
        open my $fh, '<', "/proc/$pid/status" or next;

        while (<$fh>) {
            $kb += $1 if /^VmRSS:\s+(\d+)\s+kB/;
        }
    }

    return $kb;
}

sub same_workers {
    my ($before) = @_;

    my @now = sort { $a <=> $b } worker_pids();

    Test::More::is_deeply(\@now, $before, "the same workers are running");
}

sub slowloris {
    my ($n, $seconds) = @_;

    my @s;

    for (1 .. $n) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => server_port(),
                                      Proto => 'tcp') or next;
        push @s, $s;
    }

    my $req = "GET /v1/ws?token=$KEY HTTP/1.1\r\nHost: localhost\r\n"
              . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
              . "Sec-WebSocket-Version: 13\r\n"
              . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              . ("X-Slow: y\r\n" x 1000);

    my $served = 0;
    my $end = time + $seconds;

    for (my $i = 0; time < $end; $i++) {
        for my $s (@s) {
            syswrite $s, substr($req, $i, 1);
        }

        $served++ if $i == 5 && responsive();

        sleep 0.1;
    }

    # nginx closed them: a read sees the end (or a reset)
    my $closed = 0;

    for my $s (@s) {
        $s->blocking(0);
        my $buf;
        my $n = sysread $s, $buf, 4096;
        $closed++ if defined $n && $n == 0 || !defined $n && !$!{EAGAIN};
        close $s;
    }

    return ($closed, scalar @s, $served);
}

sub close_code {
    my ($c, $t) = @_;

    my ($code) = $c->recv_close($t // 5);

    return $code // 'none';
}

sub ping_flood {
    my ($c, $n) = @_;

    my $frame = $c->build_frame(opcode => OP_PING, payload => 'p' x 125);
    my $sent = 0;

    $c->sock->blocking(0);

    for (1 .. $n / 100) {
        last if !$c->io->write_all($frame x 100, 0.5);
        $sent += 100;
    }

    return $sent;
}

$main::dashboard = \&dashboard;

run_tests();

__DATA__

=== TEST 1: slowloris handshakes are cut by client_header_timeout
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
client_header_timeout 1s;
--- config
location /v1/ws { hookstream_stream; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @pids = sort { $a <=> $b } worker_pids();

my ($closed, $n, $served) = main::slowloris(100, 3);

is $n, 100, "100 slow clients";
is $closed, $n, "nginx closed every one of them";
ok $served, "another client was served meanwhile";

ok main::responsive(), "a client is served afterwards";
main::same_workers(\@pids);
--- no_error_log
[error]
[warn]



=== TEST 2: a frame that trickles in after the upgrade meets the heartbeat
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_heartbeat 1s 1s;
--- config
location /v1/ws { hookstream_stream; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my $c = main::dashboard();
my $frame = $c->build_frame(payload => '{"type":"pong"}' . (' ' x 100));

# one byte every 100 ms: the message is never complete, no pong comes.
# The heartbeat (1 s + 1 s) must close the connection while the bytes
# still trickle in; the 8 s bound only ends the test if it does not.
my $t = time;
my $i = 0;
my $close;

while (!$close && time - $t < 8) {
    last if !$c->send_raw(substr($frame, $i++ % length $frame, 1));

    while (my $f = $c->recv_frame(0.1)) {
        if ($f->{opcode} == OP_CLOSE) {
            $close = $f;
            last;
        }
    }
}

ok $close, "closed while the client was still sending";
is $close && unpack('n', $close->{payload}), 4000,
   "closed by the heartbeat";
ok main::responsive(), "the worker serves others";
--- no_error_log
[error]
[warn]



=== TEST 3: frame lengths of 2^63 and 2^63 - 1
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_max_message 64k;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @pids = sort { $a <=> $b } worker_pids();

for my $ep ('dashboard', 'source') {
    my $c = $ep eq 'dashboard' ? main::dashboard() : main::source();

    $c->send_raw("\x81\xff" . pack('Q>', 1 << 63) . "abcd" . ('x' x 64));
    is main::close_code($c), 1002, "$ep: 2^63 is not a valid length: 1002";

    $c = $ep eq 'dashboard' ? main::dashboard() : main::source();

    $c->send_raw("\x81\xff" . pack('Q>', ~0 >> 1) . "abcd" . ('x' x 64));
    is main::close_code($c), 1009, "$ep: 2^63 - 1 is too big: 1009";

    $c = $ep eq 'dashboard' ? main::dashboard() : main::source();

    $c->send_raw("\x82\xff" . pack('Q>', ~0) . "abcd");
    is main::close_code($c), 1002, "$ep: 2^64 - 1: 1002";
}

ok main::responsive(), "a client is served afterwards";
main::same_workers(\@pids);
--- no_error_log
[error]
[warn]



=== TEST 4: endless continuation frames end at hookstream_max_message
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_max_message 64k;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
for my $ep ('dashboard', 'source') {
    my $c = $ep eq 'dashboard' ? main::dashboard() : main::source();

    $c->send_frame(opcode => OP_TEXT, fin => 0, payload => 'x' x 1000);

    my $sent = 1;
    my $chunk = join '', map { $c->build_frame(opcode => OP_CONT, fin => 0,
                                               payload => 'y' x 1000) }
                         1 .. 10;

    # at most 10 MB, far past the 64k limit
    while ($sent < 10000 && $c->send_raw($chunk)) {
        $sent += 10;
        last if $c->eof;
    }

    ok $sent < 10000, "$ep: the server stopped reading early";
    is main::close_code($c), 1009, "$ep: 1009";
}

# empty continuation frames do not grow the message, but are bounded
# by nothing else: they are just frames, read and dropped
my $c = main::dashboard();
$c->send_frame(opcode => OP_TEXT, fin => 0, payload => '{"type":');
$c->send_raw(join '', map { $c->build_frame(opcode => OP_CONT, fin => 0) }
                      1 .. 20000);
$c->send_frame(opcode => OP_CONT, fin => 1, payload => '"pong"}');
$c->send_text('{"type":"subscribe","channel":"events"}');
my $m = $c->recv_json_until(sub { $_[0]{type} eq 'subscribed' }, 5);
ok $m, "20000 empty continuation frames, then a normal message";

ok main::responsive(), "a client is served afterwards";
--- no_error_log
[error]
[warn]



=== TEST 5: a ping flood from a client that does not read
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_send_queue 64k;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @pids = sort { $a <=> $b } worker_pids();

for my $ep ('dashboard', 'source') {
    my $c = $ep eq 'dashboard' ? main::dashboard() : main::source();

    my $sent = main::ping_flood($c, 200000);

    ok $sent < 200000, "$ep: the server stopped reading ($sent pings in)";
    ok main::responsive(), "$ep: another client is served meanwhile";

    # now read: pongs come, the flood is answered as far as it was read
    $c->sock->blocking(0);
    my $pongs = 0;

    while (my $f = $c->recv_frame(1)) {
        $pongs++ if $f->{opcode} == OP_PONG;
        last if $pongs >= 100;
    }

    ok $pongs >= 100, "$ep: pongs come once the client reads";
    $c->disconnect;
}

main::same_workers(\@pids);
--- no_error_log
[error]
[warn]



=== TEST 6: thousands of subscribe messages
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_client_rate 0;
--- config
location /v1/ws { hookstream_stream; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my $c = main::dashboard();

$c->send_raw(join '', map {
    $c->build_frame(payload => qq({"type":"subscribe","channel":"custom.$_"}))
} 1 .. 3000);

my ($ok, $err, $other) = (0, 0, 0);

for (1 .. 3000) {
    my $m = $c->recv_json(5) or last;

    if ($m->{type} eq 'subscribed') {
        $ok++;

    } elsif ($m->{type} eq 'error'
             && $m->{data}{code} eq 'too_many_subscriptions')
    {
        $err++;

    } else {
        $other++;
    }
}

is $ok, 64, "64 subscriptions";
is $err, 3000 - 64, "the others are refused";
is $other, 0, "nothing else";

# the connection is sane: unsubscribe one, subscribe another
$c->send_text('{"type":"unsubscribe","channel":"custom.1"}');
my $m = $c->recv_json(5);
is $m->{type}, 'unsubscribed', "unsubscribed";

$c->send_text('{"type":"subscribe","channel":"custom.x"}');
$m = $c->recv_json(5);
is $m->{type}, 'subscribed', "a new subscription fits again";
--- no_error_log
[error]
[warn]



=== TEST 7: hookstream_client_rate: dropped with an error, then 1008
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_client_rate 10;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my $c = main::dashboard();

$c->send_raw(join '', map {
    $c->build_frame(payload => qq({"type":"subscribe","channel":"c$_"}))
} 1 .. 25);

my @m;

while (my $m = $c->recv_json(1)) {
    push @m, $m;
}

is scalar(grep { $_->{type} eq 'subscribed' } @m), 10,
   "10 messages in the second are answered";

my @limited = grep { $_->{type} eq 'error' } @m;
is scalar @limited, 1, "one error for the rest";
is $limited[0]{data}{code}, 'rate_limited', "rate_limited";

sleep 1.1;

$c->send_text('{"type":"subscribe","channel":"later"}');
is $c->recv_json(2)->{type}, 'subscribed', "answered again a second later";

# a quiet second clears the count of seconds over the rate
sleep 2.1;

# over the rate second after second: closed with 1008
my $t = time;
my ($code, $took);

while (!defined $code && time - $t < 10) {
    last if !$c->send_raw(join '', map {
        $c->build_frame(payload => '{"type":"pong"}')
    } 1 .. 20);

    while (my $f = $c->recv_frame(0.2)) {
        next if $f->{opcode} != OP_CLOSE;
        ($code) = unpack 'n', $f->{payload};
        $took = time - $t;
        last;
    }
}

is $code, 1008, "1008 after seconds over the rate";
ok $took && $took >= 3.5 && $took < 8,
   "after about 5 seconds (" . ($took // 'never') . " s)";

# the inbound source is not limited by it: 200 events, 200 acks
my $s = main::source();

$s->send_raw(join '', map {
    $s->build_frame(payload => qq({"type":"t","data":{"n":$_}}))
} 1 .. 200);

my $acks = 0;

while (my $m = $s->recv_json(3)) {
    $acks++ if $m->{type} eq 'ack';
    last if $acks == 200;
}

is $acks, 200, "a source is not rate-limited";
--- error_log
client sent more than 10 messages a second, dropping
client sent more than 10 messages a second for 5 seconds, closing
--- no_error_log
[error]
[warn]



=== TEST 8: sockets half-closed or reset mid-frame
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @pids = sort { $a <=> $b } worker_pids();

for my $ep ('dashboard', 'source') {
    for my $i (1 .. 20) {
        my $c = $ep eq 'dashboard' ? main::dashboard() : main::source();
        my $frame = $c->build_frame(payload => '{"type":"x","data":'
                                               . ('1' x 5000) . '}');

        $c->send_raw(substr($frame, 0, 2 + $i * 100));

        shutdown $c->sock, SHUT_WR;
        ok $c->wait_eof(5), "$ep: half-closed mid-frame: the server closes"
            if $i == 1;
        $c->disconnect;
    }

    for my $i (1 .. 20) {
        my $c = $ep eq 'dashboard' ? main::dashboard() : main::source();
        my $frame = $c->build_frame(payload => '{"type":"x","data":'
                                               . ('1' x 5000) . '}');

        $c->send_raw(substr($frame, 0, 2 + $i * 100));

        setsockopt $c->sock, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0);
        $c->disconnect;
    }
}

sleep 0.5;

ok main::responsive(), "a client is served afterwards";
main::same_workers(\@pids);
--- no_error_log
[error]
[warn]



=== TEST 9: all of it again and again: the memory comes back
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_max_message 64k;
hookstream_send_queue 64k;
hookstream_client_rate 20;
client_header_timeout 1s;
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @pids = sort { $a <=> $b } worker_pids();

my $round = sub {
    my @keep;

    for (1 .. 20) {
        my $c = main::dashboard();

        $c->send_raw(join '', map {
            $c->build_frame(payload => qq({"type":"subscribe","channel":"c$_"}))
        } 1 .. 100);

        push @keep, $c;
    }

    for (1 .. 5) {
        my $c = main::source();
        $c->send_frame(opcode => OP_TEXT, fin => 0, payload => 'x' x 30000);
        $c->send_frame(opcode => OP_CONT, fin => 0, payload => 'x' x 30000);
        push @keep, $c;

        $c = main::dashboard();
        main::ping_flood($c, 20000);
        push @keep, $c;

        $c = main::source();
        $c->send_raw("\x81\xff" . pack('Q>', ~0 >> 1) . "abcd");
        push @keep, $c;
    }

    main::slowloris(20, 1.5);

    $_->disconnect for @keep;
    sleep 0.5;
};

$round->() for 1 .. 2;

my $before = main::rss_kb();

$round->() for 1 .. 5;

sleep 1;

my $after = main::rss_kb();
my $margin = $ENV{HOOKSTREAM_ASAN} ? 256 * 1024 : 16 * 1024;

ok $after - $before < $margin,
   "worker memory came back: $before kB before, $after kB after";
main::same_workers(\@pids);
--- no_error_log
[error]
[warn]
