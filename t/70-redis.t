# Past one host (docs/broker.md "Past one host", docs/journal.md "The
# journal on Redis"): two nginx instances with two workers each on one
# Redis; events ingested on one reach the dashboards of both in the same
# order with the same cursors; a cursor from one host resumes on the
# other; Redis killed mid-stream and restarted: no false ack, no crash,
# nothing acked is missed; not_stored while it is down; the pipeline read
# back by a consumer group; health in the status endpoint; nginx -t on
# bad URLs.
#
# The tests start their own redis-server (Debian's redis-server package),
# so that they can kill it.  Without it they fail: nothing is skipped.

use Test::Hookstream;
use IO::Socket::INET;

use vars qw($REDIS_SERVER);
$REDIS_SERVER = $ENV{REDIS_SERVER} // '/usr/bin/redis-server';

if (!-x $REDIS_SERVER) {
    Test::More::plan(tests => 1);
    Test::More::fail("$REDIS_SERVER is not installed: apt-get install "
                     . "redis-server (make deps does)");
    exit 1;
}

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('live');
my $ORG2 = 'org_' . random_hex(32);
my $KEY2 = make_api_key('live');

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
    $ORG2 => { api_keys => [$KEY2] },
});

$ENV{TEST_NGINX_REDIS_PORT} = free_port();

use vars qw($org $src $key $org2 $key2 $redis_pid);
($org, $src, $key, $org2, $key2) = ($ORG, $SRC, $KEY, $ORG2, $KEY2);


# our redis-server, in the foreground; appendonly with fsync always, so
# that what it acknowledged survives its kill -9
sub start_redis {
    my $dir = servroot() . '/redis';
    mkdir $dir;

    $main::redis_pid = start_process(
        [$REDIS_SERVER, '--port', $ENV{TEST_NGINX_REDIS_PORT},
         '--bind', '127.0.0.1', '--dir', $dir, '--save', '',
         '--appendonly', 'yes', '--appendfsync', 'always'],
        wait_port => $ENV{TEST_NGINX_REDIS_PORT}, timeout => 10)
        or die "redis-server did not start\n";

    return $main::redis_pid;
}

sub kill_redis {
    kill 'KILL', $main::redis_pid;
    waitpid $main::redis_pid, 0;
    stop_process($main::redis_pid);
}


# one command over RESP; errors come back as { error => text }
sub redis {
    my (@args) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_REDIS_PORT},
                                  Timeout => 5)
        or die "redis: connect: $!\n";

    my $cmd = '*' . @args . "\r\n";
    $cmd .= '$' . length($_) . "\r\n$_\r\n" for @args;
    print {$s} $cmd;

    my $reply = _resp($s);
    close $s;

    return $reply;
}

sub _resp {
    my ($s) = @_;

    my $line = <$s> // die "redis: connection closed\n";
    $line =~ s/\r\n\z//;

    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));

    return $v if $t eq '+';
    return { error => $v } if $t eq '-';
    return $v + 0 if $t eq ':';

    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        read($s, $buf, $v + 2) == $v + 2 or die "redis: short read\n";
        return substr($buf, 0, $v);
    }

    if ($t eq '*') {
        return undef if $v < 0;
        return [map { _resp($s) } 1 .. $v];
    }

    die "redis: bad reply '$line'\n";
}


# the status of a host, as JSON
sub status {
    my ($port) = @_;

    my $r = http_get('/internal/status', port => $port);

    return $r->json // {};
}

# both workers connected, the subscriber subscribed and live
sub wait_redis_up {
    my ($port) = @_;

    return wait_until(sub {
        my $r = status($port)->{redis} // {};
        return ($r->{connected} // 0) >= 3 && ($r->{subscribed} // 0) >= 1;
    }, 15, 0.1);
}

# a dashboard on a host; its welcome read
sub dashboard {
    my ($port, $cursor) = @_;

    my $uri = "/v1/ws?token=$main::key";
    $uri .= "&cursor=$cursor" if defined $cursor;

    my $c = ws_connect($uri, port => $port, timeout => 10, auto_pong => 1);

    die 'dashboard: ' . ($c->status // $c->error // '?') . "\n"
        if !$c->upgraded;

    my $w = $c->recv_json(10);

    die "dashboard: no welcome\n" if !$w || $w->{type} ne 'welcome';

    return ($c, $w);
}

# the events a dashboard receives until it has $n or nothing comes for $t
sub collect {
    my ($c, $n, $t) = @_;

    my @got;

    while (@got < $n) {
        my $m = $c->recv_json($t // 5);
        last if !$m;
        push @got, $m if $m->{type} eq 'event' || $m->{type} eq 'delivery'
                         || $m->{type} eq 'reset';
    }

    return @got;
}

# one webhook on a host: the event_id when acked, else the status
sub ingest {
    my ($port, $n) = @_;

    my $r = http_post("/v1/ingest/$main::src", qq({"type":"t.$n","n":$n}),
                      port => $port,
                      headers => { 'Content-Type' => 'application/json' });

    return ($r->status // 0, $r->json);
}

sub ids {
    return map { $_->{data}{id} // "delivery:$_->{data}{n}" } @_;
}

sub cursors {
    return map { $_->{cursor} // '' } @_;
}

# the Redis journal's entries: their event ids
sub journal_ids {
    my $r = redis('XRANGE', 't70:events', '-', '+');

    return map { my %f = @{ $_->[1] }; $f{id} } @$r;
}

$main::start_redis = \&start_redis;

workers(2);
start_redis();
run_tests();

__DATA__

=== TEST 1: two hosts, one Redis: same events, same order, same cursors; resume on the other host
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
hookstream_journal redis:t70:events;
--- config
location = /v1/ws { hookstream_stream; }
location /v1/ingest/ { hookstream_ingest; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $a = server_port();
my $b = start_instance('b') or die "instance b did not start\n";
my $bp = $b->{port};

ok wait_redis_up($a), "host A: connected and subscribed";
ok wait_redis_up($bp), "host B: connected and subscribed";

my @dash = map { [dashboard($_)] } $a, $a, $bp, $bp;

like $dash[0][1]{data}{cursor}, qr/^\d+-\d+$/, "welcome cursor is a stream id";

# events in on A and on B, messages published on B
my @acked;
for my $n (1 .. 40) {
    my ($st, $j) = ingest($n % 2 ? $a : $bp, $n);
    push @acked, $j->{event_id} if $st == 200;
}
is scalar(@acked), 40, "40 events acked";

for my $n (1 .. 10) {
    my $r = http_post('/internal/publish',
        encode_json({ org_id => $main::org, type => 'delivery',
                      channel => 'deliveries', data => { n => $n } }),
        port => $bp);
    is $r->json->{published}, 1, "published $n on B" if $n == 10;
}

my @seen = map { [collect($_->[0], 50, 5)] } @dash;

is scalar(@{ $seen[$_] }), 50, "dashboard $_ got 50 messages" for 0 .. 3;

my @c0 = cursors(@{ $seen[0] });
for my $i (1 .. 3) {
    is_deeply [cursors(@{ $seen[$i] })], \@c0,
              "dashboard $i: the same cursors in the same order";
    is_deeply [ids(@{ $seen[$i] })], [ids(@{ $seen[0] })],
              "dashboard $i: the same messages";
}

my @evs = grep { $_->{type} eq 'event' } @{ $seen[0] };
is_deeply [sort map { $_->{data}{id} } @evs], [sort @acked],
          "every acked event was delivered";

ok !(grep { !/^\d+-\d+$/ } @c0), "every cursor is a stream id";

my $ordered = 1;
for my $i (1 .. $#c0) {
    my ($m1, $s1) = split /-/, $c0[$i - 1];
    my ($m2, $s2) = split /-/, $c0[$i];
    $ordered = 0 if $m2 < $m1 || ($m2 == $m1 && $s2 <= $s1);
}
ok $ordered, "cursors increase";

is_deeply [main::journal_ids()], \@acked, "the journal stream holds the acked events, in order";

# a cursor in a subscribe message: what was sent is offered again, for
# that channel only
my $d0 = $dash[0][0];
$d0->send_json({ type => 'subscribe', channel => 'deliveries',
                 cursor => $c0[39] });
my ($ack, @again) = $d0->recv_json(5);
is $ack->{type}, 'subscribed', "subscribed with a cursor";
@again = collect($d0, 10, 5);
is_deeply [cursors(@again)], [@c0[40 .. 49]],
          "the deliveries after it, again";
ok !(grep { $_->{type} ne 'delivery' } @again), "deliveries only";

# a cursor seen on A resumes on B: the rest, then live, no duplicate
my ($r, $rw) = dashboard($bp, $c0[19]);
my @rest = collect($r, 30, 5);
is_deeply [cursors(@rest)], [@c0[20 .. 49]], "resumed on B from A's cursor";

my ($st, $j) = ingest($a, 99);
is $st, 200, "one more event";
my @live = collect($r, 1, 5);
is $live[0]{data}{id}, $j->{event_id}, "then live";
ok !defined $r->recv_json(0.5), "no duplicate";

# a cursor of the future, and one that is not a stream id
my ($f) = dashboard($bp, '99999999999999-0');
my @fr = collect($f, 1, 5);
is $fr[0]{type}, 'reset', "a cursor ahead of the stream: reset";

for my $big ('18446744073709551615-18446744073709551615',
             '18446744073709551616-0') {
    my ($h) = dashboard($bp, $big);
    my @hr = collect($h, 1, 5);
    is $hr[0]{type}, 'reset', "cursor $big: reset";
}

my ($g) = dashboard($a, '3fa2c81d09be-12');
my @gr = collect($g, 1, 5);
is $gr[0]{type}, 'reset', "a cursor of a zone: reset";

stop_instance($b);


=== TEST 2: Redis killed mid-stream and restarted: no false ack, nothing acked missed
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
hookstream_journal redis:t70:events;
--- config
location = /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
location /v1/ingest/ { hookstream_ingest; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- allow_error_log
hookstream redis
--- ws
main::redis('DEL', 't70:events');

my $a = server_port();
my $b = start_instance('b') or die "instance b did not start\n";
my $bp = $b->{port};

ok wait_redis_up($a), "host A up";
ok wait_redis_up($bp), "host B up";

my ($da) = dashboard($a);
my ($db) = dashboard($bp);
my ($dc, $wc) = dashboard($bp);

my (@acked, @refused);
my $n = 0;

my $send = sub {
    my ($port) = @_;
    my ($st, $j) = ingest($port, ++$n);
    if ($st == 200) {
        push @acked, $j->{event_id};
    } else {
        push @refused, [$st, $j];
    }
    return $st;
};

$send->($n % 2 ? $a : $bp) for 1 .. 20;
is scalar(@acked), 20, "20 acked before the kill";

# what the dashboards have had so far
my %had = (A => [collect($da, 20, 5)], B => [collect($db, 20, 5)]);
is scalar(@{ $had{$_} }), 20, "dashboard on $_: 20 events" for qw(A B);

# the third dashboard leaves, to resume later with its last cursor
my @c_seen = collect($dc, 10, 5);
my $c_cursor = $c_seen[-1]{cursor};
$dc->disconnect;

main::kill_redis();

ok wait_until(sub { (status($a)->{redis}{connected} // 1) == 0
                    && (status($bp)->{redis}{connected} // 1) == 0 }, 10),
   "both hosts see Redis down";

my $before = @acked;
$send->($_ % 2 ? $a : $bp) for 1 .. 10;
is scalar(@acked), $before, "nothing acked while Redis is down";
is scalar(@refused), 10, "10 refused";
is $refused[0][0], 503, "webhook: 503";
is $refused[0][1]{status}, 503, "with the JSON error body";
like $refused[0][1]{request_id} // '', qr/^req_/, "and its request id";

my $src = ws_connect("/v1/ws/source/$main::src?token=$main::key",
                     port => $a);
$src->send_text('{"type":"x"}');
my $e = $src->recv_json(5);
is $e->{type}, 'error', "inbound socket: an error";
is $e->{data}{code}, 'not_stored', "not_stored";

my $s = status($a)->{redis};
ok defined $s->{last_error}, "status: the last error ($s->{last_error})";

# local fan-out on a host goes on without Redis
my $r = http_post('/internal/publish',
    encode_json({ org_id => $main::org, type => 'delivery',
                  channel => 'deliveries', data => { n => 1 } }),
    port => $a);
is $r->json->{published}, 1, "published on A while Redis is down";
my @local = collect($da, 1, 5);
is $local[0]{type}, 'delivery', "A's dashboard has it";

main::start_redis();

# events go on while the hosts find Redis again
my $deadline = time + 20;
while (time < $deadline) {
    $send->($n % 2 ? $a : $bp);
    last if @acked >= $before + 30;
    sleep 0.02;
}
ok @acked >= $before + 30, "acked again after the restart";

ok wait_redis_up($a), "host A up again";
ok wait_redis_up($bp), "host B up again";

$send->($_ % 2 ? $a : $bp) for 1 .. 10;

my %journal = map { $_ => 1 } main::journal_ids();
my @missing = grep { !$journal{$_} } @acked;
is scalar(@missing), 0, "every acked event is in the stream (no false ack)";

my %acked = map { $_ => 1 } @acked;
for my $d ([$da, 'A'], [$db, 'B']) {
    my @got = grep { $_->{type} eq 'event' }
              @{ $had{$d->[1]} }, collect($d->[0], 1000, 3);
    my %got = map { $_->{data}{id} => 1 } @got;
    my @lost = grep { !$got{$_} } @acked;
    is scalar(@lost), 0, "dashboard on $d->[1]: every acked event";
    my @extra = grep { !$acked{$_->{data}{id}} } @got;
    is scalar(@extra), 0, "dashboard on $d->[1]: nothing that was not acked";
    my %dup;
    ok !(grep { $dup{$_->{data}{id}}++ } @got), "dashboard on $d->[1]: no duplicate";
}

# the dashboard that left resumes on A with its cursor from B
my ($dr) = dashboard($a, $c_cursor);
my @rest = grep { $_->{type} eq 'event' } collect($dr, 1000, 3);
is_deeply [map { $_->{data}{id} } @rest], [@acked[10 .. $#acked]],
          "resumed on A: every acked event after its cursor, in order";

stop_instance($b);


=== TEST 3: subscribers cut off: what was published meanwhile is read back
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- allow_error_log
hookstream redis
--- ws
my $a = server_port();
my $b = start_instance('b') or die "instance b did not start\n";
my $bp = $b->{port};

ok wait_redis_up($a), "host A up";
ok wait_redis_up($bp), "host B up";

my ($da) = dashboard($a);
my ($db) = dashboard($bp);

my $n = 0;
my $pub = sub {
    my $r = http_post('/internal/publish',
        encode_json({ org_id => $main::org, type => 'delivery',
                      channel => 'deliveries', data => { n => ++$n } }),
        port => $a);
    return $r->json && $r->json->{published} == 1;
};

$pub->() for 1 .. 10;

# every host's subscriber connection goes; commands go on
my $killed = main::redis('CLIENT', 'KILL', 'TYPE', 'pubsub');
is $killed, 2, "two subscriber connections killed";

my $t = time;
$pub->() while time - $t < 0.5;
ok $n > 20, "$n published, some while the subscribers were away";

ok wait_redis_up($a), "host A subscribed again";
ok wait_redis_up($bp), "host B subscribed again";

$pub->() for 1 .. 10;

for my $d ([$da, 'A'], [$db, 'B']) {
    my @got = map { $_->{data}{n} } collect($d->[0], $n, 5);
    is_deeply \@got, [1 .. $n], "dashboard on $d->[1]: all $n, in order";
}

my $rec = (status($a)->{redis}{recovered} // 0)
          + (status($bp)->{redis}{recovered} // 0);
ok $rec > 0, "$rec read back from the streams";

stop_instance($b);


=== TEST 4: a stream that cannot be read back does not keep the host from going live
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70bad:;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
ok wait_redis_up(server_port()), "up";

# the second org's stream key holds a string: XREAD of it fails
main::redis('SET', "t70bad:stream:$main::org2", 'not a stream');

my ($d1) = dashboard(server_port());
my $c2 = ws_connect("/v1/ws?token=$main::key2", timeout => 10);
ok $c2->upgraded, "a dashboard of the second org";

is main::redis('CLIENT', 'KILL', 'TYPE', 'pubsub'), 1, "subscriber killed";
ok wait_redis_up(server_port()), "subscribed again";
ok wait_until(sub { error_log_text() =~ /XREAD, messages missed are lost/ },
              5, 0.1), "the failed read-back is logged";

my $r = http_post('/internal/publish',
    encode_json({ org_id => $main::org, type => 'delivery',
                  channel => 'deliveries', data => { n => 1 } }));
is $r->json->{published}, 1, "published";
my @got = collect($d1, 1, 5);
is $got[0]{data}{n}, 1, "live again";


=== TEST 5: a reload of one host while messages flow: every message once, resumed by cursor
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $a = server_port();
my $b = start_instance('b') or die "instance b did not start\n";
my $bp = $b->{port};

ok wait_redis_up($a), "host A up";
ok wait_redis_up($bp), "host B up";

my ($da) = dashboard($a);
my ($db) = dashboard($bp);

my $n = 0;
my $pub = sub {
    my $r = http_post('/internal/publish',
        encode_json({ org_id => $main::org, type => 'delivery',
                      channel => 'deliveries', data => { n => ++$n } }),
        port => $bp);
    return $r->json && $r->json->{published} == 1;
};

$pub->() for 1 .. 20;
my @a1 = collect($da, 20, 5);
is scalar(@a1), 20, "A: 20 before the reload";

# A reloads: its old workers close the dashboard (1001); it comes back
# with its last cursor while B goes on publishing
ok reload_nginx(), "A reloaded";
$pub->() for 1 .. 20;

my @more = collect($da, 100, 2);
my ($code) = $da->recv_close(2);
my ($dr) = dashboard($a, (@more ? $more[-1] : $a1[-1])->{cursor});
$pub->() for 1 .. 20;

my @a2 = (@a1, @more, collect($dr, 100, 3));
is_deeply [map { $_->{data}{n} } @a2], [1 .. $n],
          "A: all $n across the reload, once, in order";
is_deeply [map { $_->{data}{n} } collect($db, 100, 3)], [1 .. $n],
          "B: all $n";

stop_instance($b);


=== TEST 6: a password, a db, a unix socket; a wrong password is an error in the status
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis unix://$TEST_NGINX_SERVER_ROOT/redis2.sock?db=3&password=s3cret prefix=t70:;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- allow_error_log
hookstream redis
--- ws
my $port2 = free_port();
my $sock = servroot() . '/redis2.sock';
my $pid = start_process([$main::REDIS_SERVER, '--port', $port2,
                         '--bind', '127.0.0.1', '--unixsocket', $sock,
                         '--requirepass', 's3cret', '--save', '',
                         '--appendonly', 'no'],
                        wait_port => $port2, timeout => 10,
                        log => servroot() . '/logs/redis2.log')
    or die "redis-server 2 did not start\n";

my $cf = "hookstream_zone hookstream 8m;\n"
         . "hookstream_directory " . data_dir() . "/directory.json;\n"
         . "hookstream_redis redis://:s3cret\@127.0.0.1:$port2/3 "
         . "prefix=t70:;\n";
my $b = start_instance('b', http_config => $cf)
    or die "instance b did not start\n";
my $w = start_instance('w', http_config => $cf =~ s/s3cret/wrong/r)
    or die "instance w did not start\n";

ok wait_redis_up(server_port()), "A up over the unix socket";
ok wait_redis_up($b->{port}), "B up over TCP with a password";

my ($db) = dashboard($b->{port});
my $r = http_post('/internal/publish',
    encode_json({ org_id => $main::org, type => 'delivery',
                  channel => 'deliveries', data => { n => 7 } }));
is $r->json->{published}, 1, "published on A";
my @got = collect($db, 1, 5);
is $got[0]{data}{n}, 7, "B has it";

my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port2)
    or die "redis 2: $!\n";
print {$s} "AUTH s3cret\r\nSELECT 3\r\nXLEN t70:stream:$main::org\r\n";
my @l = map { scalar <$s> } 1 .. 3;
is $l[2], ":1\r\n", "the message is in db 3";

ok wait_until(sub {
    my $e = status($w->{port})->{redis}{last_error} // '';
    return $e =~ /AUTH/;
}, 10, 0.1), "a wrong password: an AUTH error in the status";
is status($w->{port})->{redis}{connected} // -1, 0, "and nothing connected";

# no password in any log
my $logs = error_log_text();
for my $i ($b, $w) {
    open my $fh, '<', $i->{error_log} or die "$i->{error_log}: $!";
    local $/;
    $logs .= <$fh>;
}
like $logs, qr/redis:\/\/:\*\*\*\@127\.0\.0\.1/, "the URL is logged masked";
like $logs, qr/password=\*\*\*/, "the unix one too";
ok $logs !~ /s3cret|wrong\@/, "no password in the logs";

stop_instance($_) for $b, $w;
stop_process($pid);


=== TEST 7: the file journal with Redis between hosts: acked events in ack order on both hosts
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=off;
--- config
location = /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
location /v1/ingest/ { hookstream_ingest; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $a = server_port();
my $cf = "hookstream_zone hookstream 8m;\n"
         . "hookstream_directory " . data_dir() . "/directory.json;\n"
         . "hookstream_redis redis://127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} "
         . "prefix=t70:;\n";
my $b = start_instance('b', http_config => $cf)
    or die "instance b did not start\n";
my $bp = $b->{port};

ok wait_redis_up($a), "host A up";
ok wait_redis_up($bp), "host B up";

my ($da) = dashboard($a);
my ($db) = dashboard($bp);

# webhooks on A (file journal) and B (no journal), one after the other
my @acked;
for my $n (1 .. 30) {
    my ($st, $j) = ingest($n % 2 ? $a : $bp, $n);
    push @acked, $j->{event_id} if $st == 200;
}
is scalar(@acked), 30, "30 acked";

# and the inbound socket on B: no journal, acks say so
my $src = ws_connect("/v1/ws/source/$main::src?token=$main::key",
                     port => $bp);
$src->send_text('{"type":"w"}');
my $ack = $src->recv_json(5);
is $ack->{type}, 'ack', "ack on B";
ok !$ack->{durable}, "not durable without a journal";
push @acked, $ack->{event_id};

for my $d ([$da, 'A'], [$db, 'B']) {
    my @got = map { $_->{data}{id} } collect($d->[0], 31, 5);
    is_deeply \@got, \@acked, "dashboard on $d->[1]: in the order of the acks";
}

stop_instance($b);


=== TEST 8: a cursor the stream was trimmed past: reset; a recent one: the rest
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70trim:;
hookstream_buffer 10 1h;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
ok wait_redis_up(server_port()), "up";
main::redis('DEL', "t70trim:stream:$main::org");

my ($d) = dashboard(server_port());

# NDJSON, 50 a request: Redis trims whole nodes of entries
my $published = 0;
for my $i (0 .. 5) {
    my $body = join '', map {
        encode_json({ org_id => $main::org, type => 'delivery',
                      channel => 'deliveries', data => { n => $_ } }) . "\n"
    } $i * 50 + 1 .. $i * 50 + 50;
    $published += http_post('/internal/publish', $body)->json->{published};
}
is $published, 300, "300 published";

my @all = collect($d, 300, 5);
is scalar(@all), 300, "300 delivered live";

my $len = main::redis('XLEN', "t70trim:stream:$main::org");
ok $len < 300, "the stream was trimmed to $len";

my ($old) = dashboard(server_port(), $all[0]{cursor});
my @r = collect($old, 1, 5);
is $r[0]{type}, 'reset', "the first message's cursor: reset";

my ($new) = dashboard(server_port(), $all[289]{cursor});
my @rest = collect($new, 10, 5);
is_deeply [map { $_->{data}{n} } @rest], [291 .. 300],
          "a cursor still in the stream: the rest";


=== TEST 9: the pipeline: N acked events are N entries, read back by a consumer group
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT/0 prefix=t70:;
hookstream_journal redis:t70:pipeline wait=0;
--- config
location /v1/ws/source/ { hookstream_source; }
location /v1/ingest/ { hookstream_ingest; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
main::redis('DEL', 't70:pipeline');
ok wait_until(sub {
    my $c = ws_connect("/v1/ws/source/$main::src?token=$main::key");
    $c->send_text('{"type":"probe"}');
    my $m = $c->recv_json(2);
    return $m && $m->{type} eq 'ack';
}, 10, 0.1), "connected";

my @c = map { ws_connect("/v1/ws/source/$main::src?token=$main::key") } 1 .. 4;
my $total = 400;
for my $i (0 .. $total - 1) {
    $c[$i % 4]->send_text(qq({"type":"p","n":$i,"big":18446744073709551615}));
}
my @acks;
for my $c (@c) {
    while (my $m = $c->recv_json(5)) {
        push @acks, $m->{event_id} if $m->{type} eq 'ack';
        last if @acks % 100 == 0 && @acks == 100 * (grep { $_ } 1);
    }
}
is scalar(@acks), $total, "$total acks";

is main::redis('XLEN', 't70:pipeline'), $total + 1, "N + 1 entries (the probe)";

is main::redis('XGROUP', 'CREATE', 't70:pipeline', 'delivery', '0'), 'OK',
   "consumer group";
my $r = main::redis('XREADGROUP', 'GROUP', 'delivery', 'w1', 'COUNT', '1000',
                    'STREAMS', 't70:pipeline', '>');
my @entries = @{ $r->[0][1] };
my %ids;
my $exact = 0;
for my $e (@entries) {
    my %f = @{ $e->[1] };
    $ids{$f{id}} = 1;
    $exact++ if $f{record} =~ /"big":18446744073709551615\}/;
}
ok !(grep { !$ids{$_} } @acks), "every acked id read by the group";
is $exact, $total, "bodies byte for byte";
is main::redis('XACK', 't70:pipeline', 'delivery', map { $_->[0] } @entries),
   $total + 1, "XACK";


=== TEST 10: status: Redis health as JSON and Prometheus text; none from the cache manager
--- http_config
hookstream_zone hookstream 8m;
hookstream_redis redis://127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=t70:;
proxy_cache_path $TEST_NGINX_SERVER_ROOT/cache keys_zone=c70:1m;
--- config
location = /internal/status { hookstream_status; }
location = /v1/ws { hookstream_stream; }
--- allow_error_log
exited on signal 9
--- ws
ok wait_redis_up(server_port()), "up";
sleep 0.5;
my $s = status(server_port())->{redis};
is $s->{connected}, 3, "three connections: a command one per worker, a subscriber";
is $s->{subscribed}, 1, "one subscriber";
ok exists $s->{last_error}, "last_error";
my $t = http_get('/internal/status?format=prometheus')->body;
like $t, qr/^hookstream_redis_connections 3$/m, "prometheus: connections";
like $t, qr/^hookstream_redis_subscribed 1$/m, "prometheus: subscribed";
like $t, qr/^hookstream_redis_errors_total \d+$/m, "prometheus: errors";

# killed workers give nothing back; their replacements count anew
kill_worker($_) for worker_pids();
ok wait_until(sub {
    my $r = status(server_port())->{redis};
    return $r->{connected} == 3 && $r->{subscribed} == 1;
}, 10, 0.1), "after kill -9 of both workers: three connections, one subscriber";


=== TEST 11: single-host mode: no redis in the status
--- http_config
hookstream_zone hookstream 8m;
--- config
location = /internal/status { hookstream_status; }
--- request
GET /internal/status
--- response_json eval
{ redis => undef }


=== TEST 12: nginx -t: a URL that is not one
--- http_config
hookstream_redis http://127.0.0.1:6379;
--- must_die
--- error_log
invalid Redis URL "http://127.0.0.1:6379"


=== TEST 13: nginx -t: a db that is not a number
--- http_config
hookstream_redis redis://127.0.0.1:6379/x;
--- must_die
--- error_log
invalid Redis URL "redis://127.0.0.1:6379/x"


=== TEST 14: nginx -t: the Redis journal without hookstream_redis
--- http_config
hookstream_journal redis:events;
--- must_die
--- error_log
"hookstream_journal redis:..." needs "hookstream_redis"


=== TEST 15: nginx -t: an unknown parameter
--- http_config
hookstream_redis unix:///run/redis.sock?db=2 timeout=1;
--- must_die
--- error_log
invalid parameter "timeout=1"


=== TEST 16: a user, a password, an IPv6 address, a db and the parameters parse
--- http_config
hookstream_zone hookstream 8m;
hookstream_redis redis://u:p@[::1]:1/2 prefix=x: connect_timeout=2s;
--- config
location = /internal/status { hookstream_status; }
--- request
GET /internal/status
--- response_json eval
{ redis => { connected => 0, subscribed => 0 } }
