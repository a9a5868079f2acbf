# The channel broker (docs/broker.md): fan-out of published messages to
# dashboards in every worker, in order and exactly once; isolation between
# orgs; resuming from a cursor while publishes race the replay; reset for a
# cursor that is stale, foreign, from the future or unparsable; eviction in
# a small zone; the zone across a reload; a crashed worker's connections
# given back.
#
# Dashboards and publishers use a second server that listens with
# "reuseport", so the kernel spreads connections over every worker.

use Test::Hookstream;

use POSIX ();

my $ORG1 = 'org_5f0c1d6e2b7a4c3d9e8f7a6b5c4d3e2f';
my $ORG2 = 'org_0a1b2c3d4e5f60718293a4b5c6d7e8f9';
my $KEY1 = 'hs_live_' . ('4b' x 32);
my $KEY2 = 'hs_live_' . ('7c' x 32);

$ENV{TEST_NGINX_DIRJSON} = directory_json({
    $ORG1 => { api_keys => [$KEY1] },
    $ORG2 => { api_keys => [$KEY2] },
});

$ENV{TEST_NGINX_PORT2} = free_port();

our ($org1, $org2, $key1, $key2) = ($ORG1, $ORG2, $KEY1, $KEY2);


# publishes messages $from .. $to to an org as NDJSON, $per lines a request;
# data is {"n":N,"pad":"..."} with $pad bytes of padding; via => sub
# ($body) returning a response sends the requests another way
sub publish {
    my (%o) = @_;

    my $per = $o{per} // 50;
    my $pad = 'x' x ($o{pad} // 0);
    my $ok = 1;

    for (my $i = $o{from}; $i <= $o{to}; $i += $per) {
        my $last = $i + $per - 1;
        $last = $o{to} if $last > $o{to};

        my $body = join '', map {
            qq({"org_id":"$o{org}","type":"delivery","channel":"deliveries",)
            . qq("data":{"n":$_,"pad":"$pad"}}\n)
        } $i .. $last;

        my $r = $o{via} ? $o{via}->($body)
                : http_post('/internal/publish', $body,
                            port => $ENV{TEST_NGINX_PORT2}, timeout => 20);
        my $j = $r->json;

        if (!$r->status || $r->status != 200 || !$j
            || $j->{published} != $last - $i + 1)
        {
            Test::More::diag('publish failed: ' . $r->dump);
            $ok = 0;
        }
    }

    return $ok;
}


# a dashboard of an org, its welcome read; dies if it did not upgrade
sub dashboard {
    my ($key, $cursor) = @_;

    my $uri = "/v1/ws?token=$key";
    $uri .= "&cursor=$cursor" if defined $cursor;

    my $c = ws_connect($uri, port => $ENV{TEST_NGINX_PORT2}, timeout => 10);

    die 'dashboard: ' . ($c->status // $c->error // '?') if !$c->upgraded;

    my $w = $c->recv_json(10);

    die 'dashboard: no welcome' if !$w || $w->{type} ne 'welcome';

    return ($c, $w);
}


# the next $n "delivery" messages of a connection: [[n, seq, cursor], ...]
# (fewer if they stop coming); other types are kept in $c->{other}
sub receive {
    my ($c, $n, $t) = @_;

    my @got;

    while (@got < $n) {
        my $m = $c->recv_json($t // 10);
        last if !$m;

        if ($m->{type} ne 'delivery') {
            push @{ $c->{other} }, $m;
            next;
        }

        my ($seq) = $m->{cursor} =~ /-(\d+)$/;
        push @got, [$m->{data}{n}, $seq, $m->{cursor}];
    }

    return \@got;
}


# one test: @$got holds exactly messages $from .. $to, in order, with
# consecutive sequence numbers
sub in_order {
    my ($got, $from, $to, $name) = @_;

    my $want = $to - $from + 1;
    my @why;

    push @why, 'got ' . scalar(@$got) . " messages, want $want"
        if @$got != $want;

    for my $i (0 .. $#$got) {
        my ($n, $seq) = @{ $got->[$i] };

        if ($n != $from + $i) {
            push @why, "message $i is n=$n, want " . ($from + $i);
            last;
        }

        if ($i && $seq != $got->[$i - 1][1] + 1) {
            push @why, "message $i has seq $seq after $got->[$i - 1][1]";
            last;
        }
    }

    Test::More::ok(!@why, $name) or Test::More::diag(join "\n", @why);
}


# the distinct worker pids that logged a debug line matching $re
sub pids_logging {
    my ($re) = @_;

    my %pids;

    for (split /\n/, error_log_text()) {
        $pids{$1} = 1 if /\[debug\] (\d+)#\d+: .*$re/;
    }

    return scalar keys %pids;
}


# the fan-out test of TEST 1 and TEST 2
sub fanout {
    my ($workers) = @_;

    my (@one, @two);

    push @one, (dashboard($main::key1))[0] for 1 .. 40;
    push @two, (dashboard($main::key2))[0] for 1 .. 5;

    Test::More::ok(publish(org => $main::org1, from => 1, to => 1000,
                           per => 25), 'published 1000 messages');

    my $i = 0;

    for my $c (@one) {
        $i++;
        in_order(receive($c, 1000), 1, 1000,
                 "dashboard $i: 1000 messages in order, once each");
    }

    my $leak = 0;

    for my $c (@two) {
        $leak++ if defined $c->recv_message(0.2);
    }

    Test::More::is($leak, 0, 'the other org received nothing');

    Test::More::ok(pids_logging(qr/hookstream subscribe "\Q$main::org1\E"/)
                   >= 2, "dashboards in several of $workers workers");
    Test::More::ok(pids_logging(qr/hookstream publish "\Q$main::org1\E"/)
                   >= 2, "publishers in several of $workers workers");

    my @lines = split /\n/, error_log_text();
    my $wakeups = grep { /hookstream wakeup in worker/ } @lines;
    my $published = grep { /hookstream publish "/ } @lines;

    Test::More::cmp_ok($wakeups, '<', $published,
                       "wakeups coalesced ($wakeups for $published "
                       . "messages)");

    $_->disconnect for @one, @two;
}

$main::publish = \&publish;


run_tests();

__DATA__

=== TEST 1: fan-out over 2 workers: 40 dashboards, 1000 messages each
--- workers: 2
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
main::fanout(2);
--- no_error_log
[error]
[warn]



=== TEST 2: fan-out over 4 workers: 40 dashboards, 1000 messages each
--- workers: 4
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
main::fanout(4);
--- no_error_log
[error]
[warn]



=== TEST 3: resume from a cursor while publishes race the replay
--- workers: 4
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_buffer 5000 1h;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my ($a) = main::dashboard($main::key1);

ok main::publish(org => $main::org1, from => 1, to => 200), 'published 200';

my $first = main::receive($a, 200);
main::in_order($first, 1, 200, 'the first 200');

my $cursor = $first->[99][2];
like $cursor, qr/^[0-9a-f]+-100$/, "the cursor of message 100: $cursor";

# a publisher in another process, while dashboards resume from 100
my $pid = fork // die "fork: $!";

if ($pid == 0) {
    my $ok = main::publish(org => $main::org1, from => 201, to => 1400,
                           per => 10);
    POSIX::_exit($ok ? 0 : 1);
}

my @r;

for (1 .. 12) {
    push @r, (main::dashboard($main::key1, $cursor))[0];
    sleep 0.03;
}

waitpid $pid, 0;
is $?, 0, 'the racing publisher published 1200 more';

my $i = 0;

for my $c (@r) {
    $i++;
    main::in_order(main::receive($c, 1300), 101, 1400,
                   "resumed dashboard $i: 101 to 1400, no gap, no duplicate");
    ok !defined $c->recv_message(0.1), "resumed dashboard $i: nothing more";
}

main::in_order(main::receive($a, 1200), 201, 1400,
               'the first dashboard: 201 to 1400');

# the resumes met the publisher at different points of its run

my %replayed = map { $_ => 1 } error_log_text()
                   =~ /hookstream subscribe .* last:100 replay:(\d+)/g;
cmp_ok scalar(keys %replayed), '>=', 3,
       'replays of different lengths: ' . join ' ', sort keys %replayed;
--- no_error_log
[error]
[warn]



=== TEST 4: reset for a stale, foreign, future or unparsable cursor
--- workers: 2
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_buffer 10 1h;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my ($a, $w) = main::dashboard($main::key1);
my ($epoch) = $w->{data}{cursor} =~ /^([0-9a-f]+)-\d+$/;
ok $epoch, "the welcome's cursor has the epoch: $w->{data}{cursor}";

ok main::publish(org => $main::org1, from => 1, to => 50), 'published 50';
my $got = main::receive($a, 50);
main::in_order($got, 1, 50, 'live: 50 messages');

# hookstream_buffer 10: messages 41 to 50 are kept

my ($c) = main::dashboard($main::key1, $got->[39][2]);
main::in_order(main::receive($c, 10), 41, 50,
               'cursor of 40 (just before the oldest kept): 41 to 50');
ok !$c->{other}, 'no reset' or diag explain $c->{other};

my $other = $epoch;
substr($other, -1, 1) = substr($other, -1) eq '0' ? '1' : '0';

my %bad = (
    'stale (39)' => $got->[38][2],
    'stale (1)' => $got->[0][2],
    'foreign epoch' => "$other-45",
    'from the future' => "$epoch-51",
    'unparsable' => 'nonsense',
    'no seq' => "$epoch-",
    'overflow' => "$epoch-99999999999999999999999",
);

my %reset;

for my $why (sort keys %bad) {
    my ($r) = main::dashboard($main::key1, $bad{$why});
    my $m = $r->recv_json(5);
    is $m && $m->{type}, 'reset', "$why cursor: reset"
        or diag explain $m;
    $reset{$why} = $r;
}

# after a reset the connection is live

ok main::publish(org => $main::org1, from => 51, to => 51), 'one more';

for my $why (sort keys %reset) {
    main::in_order(main::receive($reset{$why}, 1), 51, 51,
                   "$why cursor: live after the reset");
}

main::in_order(main::receive($c, 1), 51, 51, 'the resumed one: live');

# a cursor in a subscribe message, on a quiet connection

my ($s) = main::dashboard($main::key1);
$s->send_json({ type => 'subscribe', channel => 'deliveries',
                cursor => $got->[44][2] });
my $m = $s->recv_json(5);
is $m->{type}, 'subscribed', 'subscribed';
main::in_order(main::receive($s, 6), 46, 51,
               'subscribe with the cursor of 45: 46 to 51');

ok main::publish(org => $main::org1, from => 52, to => 52), 'one more';
main::in_order(main::receive($s, 1), 52, 52, 'then live, once');
ok !defined $s->recv_message(0.2), 'nothing more';

$s->send_json({ type => 'subscribe', channel => 'deliveries',
                cursor => $got->[4][2] });
$m = $s->recv_json(5);
is $m->{type}, 'subscribed', 'subscribed again';
$m = $s->recv_json(5);
is $m && $m->{type}, 'reset', 'a stale cursor in a subscribe: reset';
--- no_error_log
[error]
[warn]



=== TEST 5: a small zone evicts the oldest messages; too big is refused
--- workers: 2
--- http_config
hookstream_zone hookstream 512k;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish {
        client_max_body_size 4m;
        client_body_buffer_size 4m;
        hookstream_publish;
    }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my ($a, $wa) = main::dashboard($main::key1);
my ($b) = main::dashboard($main::key2);

# 600 messages of 2k: about five times the ring (a quarter of the zone)

ok main::publish(org => $main::org2, from => 1, to => 5), '5 to org 2';

my ($ok, $got) = (1, []);

for (my $i = 1; $i <= 600; $i += 20) {
    $ok &&= main::publish(org => $main::org1, from => $i, to => $i + 19,
                          per => 10, pad => 2000);
    push @$got, @{ main::receive($a, 20) };
}

ok $ok, 'published 600 messages of 2k';
main::in_order($got, 1, 600, 'a live dashboard got all 600, in order');
main::in_order(main::receive($b, 5), 1, 5, 'the other org got its 5');

my ($epoch) = $wa->{data}{cursor} =~ /^([0-9a-f]+)-/;
my ($gone) = main::dashboard($main::key2, "$epoch-0");
my $g = $gone->recv_json(5);
is $g && $g->{type}, 'reset',
   "the other org's messages, the oldest, were evicted too";

my ($old) = main::dashboard($main::key1, $got->[99][2]);
my $m = $old->recv_json(5);
is $m && $m->{type}, 'reset', 'an evicted cursor: reset';

my ($new) = main::dashboard($main::key1, $got->[589][2]);
main::in_order(main::receive($new, 10), 591, 600,
               'a recent cursor: 591 to 600 replayed');

# one message larger than a quarter of the ring cannot be stored

my $big = qq({"org_id":"$main::org1","type":"delivery",)
          . qq("channel":"deliveries","data":{"n":0,"pad":")
          . ('y' x 200000) . qq("}});
my $r = http_post('/internal/publish', $big,
                  port => $ENV{TEST_NGINX_PORT2});
is $r->status, 400, 'too big: refused';
like $r->body, qr/"errors":\[\{"line":1/, 'with the line in error';

ok !defined $a->recv_message(0.3), 'nothing was delivered';

ok main::publish(org => $main::org1, from => 601, to => 601, pad => 2000),
   'the next one is stored';
my $next = main::receive($a, 1);
main::in_order([@$got[-1], @$next], 600, 601,
               'with the next sequence number');

my @errors = grep { /\[(error|warn)\]/ } split /\n/, error_log_text();
is scalar(@errors), 1, 'one error logged' or diag join "\n", @errors;
my $full = 'hookstream zone "hookstream" is full: a message of \d+ bytes'
           . ' to "' . quotemeta($main::org1) . '" refused';
like $errors[0] // '', qr/\[error\] .*$full/,
     'the zone-full line';



=== TEST 6: the zone and its cursors live on across a reload
--- workers: 2
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my ($a, $w) = main::dashboard($main::key1);

ok main::publish(org => $main::org1, from => 1, to => 50), 'published 50';
my $got = main::receive($a, 50);
main::in_order($got, 1, 50, 'before the reload');

ok reload_nginx(), 'reloaded';

# the old worker closes its dashboards as it drains

my ($code) = $a->recv_close(10);
is $code, 1001, 'the old dashboard: going away';

ok main::publish(org => $main::org1, from => 51, to => 100), 'published 50';

my ($b, $w2) = main::dashboard($main::key1, $got->[49][2]);
my ($e1) = $w->{data}{cursor} =~ /^([0-9a-f]+)-/;
my ($e2) = $w2->{data}{cursor} =~ /^([0-9a-f]+)-/;
is $e2, $e1, 'the same epoch';

main::in_order(main::receive($b, 50), 51, 100,
               'resumed across the reload: 51 to 100');

my ($c) = main::dashboard($main::key1);
ok main::publish(org => $main::org1, from => 101, to => 300, per => 20),
   'published 200 more';
main::in_order(main::receive($b, 200), 101, 300, 'then live');
main::in_order(main::receive($c, 200), 101, 300, 'a new dashboard too');
--- no_error_log
[error]
[warn]



=== TEST 7: a killed worker's connections are given back to the org
--- workers: 1
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_max_connections_per_org 3;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location /internal/publish { hookstream_publish; }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- ws
my @c = map { (main::dashboard($main::key1))[0] } 1 .. 3;

my $x = ws_connect("/v1/ws?token=$main::key1",
                   port => $ENV{TEST_NGINX_PORT2});
is $x->status, 429, 'a fourth connection: 429';

ok main::publish(org => $main::org1, from => 1, to => 5), 'published 5';
main::in_order(main::receive($c[0], 5), 1, 5, 'delivered');

ok kill_worker(), 'killed the worker';

my @d = map { (main::dashboard($main::key1))[0] } 1 .. 3;
is scalar(@d), 3, 'three connections again';

ok main::publish(org => $main::org1, from => 6, to => 10), 'published 5';

for my $i (0 .. 2) {
    main::in_order(main::receive($d[$i], 5), 6, 10, "new dashboard $i");
}

like error_log_text(),
     qr/hookstream zone "hookstream": releasing what exited process \d+ held/,
     'the replacement released what the killed worker held';
--- allow_error_log
exited on signal 9
--- no_error_log
[error]
[warn]



=== TEST 8: a worker that falls a whole ring behind resets its dashboards
--- workers: 2
--- http_config
hookstream_zone hookstream 512k;
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_send_queue 8m;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location /v1/ws { hookstream_stream; }
    location = /pid { return 200 $pid; }
    location /internal/publish {
        client_max_body_size 4m;
        hookstream_publish;
    }
}
--- config
location /t { return 204; }
--- user_files eval
[ ['dir.json', $ENV{TEST_NGINX_DIRJSON}] ]
--- allow_error_log
fell
--- ws
use IO::Socket::INET;
use IO::Select;

my @c = map { (main::dashboard($main::key1))[0] } 1 .. 20;

# one keep-alive HTTP connection, so every publish reaches one worker: the
# other one is stopped while 600 messages of 2k go round its ring 5 times
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ENV{TEST_NGINX_PORT2}",
                              Timeout => 5) or die "connect: $!";
my $buf = '';

my $request = sub {
    my ($method, $uri, $body) = @_;

    $body //= '';
    print $s "$method $uri HTTP/1.1\r\nHost: localhost\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n$body";

    my $sel = IO::Select->new($s);
    my $deadline = time + 20;

    for (;;) {
        if ($buf =~ /^HTTP\/1\.1 (\d+)[^\r]*\r\n(.*?)\r\n\r\n/s) {
            my ($status, $head, $hlen) = ($1, $2, $+[0]);
            my ($len) = $head =~ /content-length:\s*(\d+)/i;

            if (length($buf) >= $hlen + ($len // 0)) {
                my $b = substr($buf, $hlen, $len // 0);
                $buf = substr($buf, $hlen + ($len // 0));
                return bless { status => $status, body => $b },
                             'main::Raw';
            }
        }

        return bless { status => 0, body => '' }, 'main::Raw'
            if time > $deadline || !$sel->can_read(1);

        sysread($s, $buf, 65536, length $buf) or last;
    }

    return bless { status => 0, body => '' }, 'main::Raw';
};

package main::Raw {
    sub status { $_[0]{status} }
    sub json { my $j = eval { JSON::PP::decode_json($_[0]{body}) }; $j }
    sub dump { "$_[0]{status} $_[0]{body}" }
}

my $pub_pid = $request->('GET', '/pid')->{body};
my ($stopped) = grep { $_ != $pub_pid } worker_pids();
ok $pub_pid && $stopped, "publishing through $pub_pid, stopping $stopped";

kill 'STOP', $stopped;

my $via = sub { $request->('POST', '/internal/publish', $_[0]) };

ok main::publish(org => $main::org1, from => 1, to => 600, per => 10,
                 pad => 2000, via => $via),
   'published 600 messages of 2k';

kill 'CONT', $stopped;

# the stopped worker catches up with its wakeups and its poll
sleep 1.5;

ok main::publish(org => $main::org1, from => 601, to => 605, via => $via),
   'published 5 more';

my ($whole, $reset) = (0, 0);

for my $i (0 .. $#c) {
    # up to the last message, 605 (a reset dashboard gets fewer)
    my $got = [];

    while (!@$got || $got->[-1][0] != 605) {
        my $more = main::receive($c[$i], 1, 5);
        last if !@$more;
        push @$got, @$more;
    }
    my @other = grep { $_->{type} ne 'ping' } @{ $c[$i]{other} // [] };

    if (!@other) {
        main::in_order($got, 1, 605, "dashboard $i: all 605, in order");
        $whole++;
        next;
    }

    $reset++;

    is $other[0]{type}, 'reset', "dashboard $i: a reset";
    like $other[0]{data}{cursor} // '', qr/^[0-9a-f]+-\d+$/,
         "dashboard $i: the reset has a cursor";

    # nothing from before the lap, then everything live after it
    main::in_order($got, 601, 605, "dashboard $i: then 601 to 605");
}

ok $whole, "$whole dashboards of the running worker got everything";
ok $reset, "$reset dashboards of the stopped worker were reset";

like error_log_text(), qr/\[warn\] .*fell \d+ bytes behind the message ring/,
     'the lap is logged';
