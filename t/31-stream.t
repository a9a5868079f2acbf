# The dashboard stream's behaviour (docs/protocol.md): the welcome,
# subscribe filtering by channel and by key, client errors, the JSON
# heartbeat, slow consumers, the per-org connection limit, the publish
# endpoint's per-line errors, and reload with live clients.

use Test::Hookstream;
use Test::Hookstream::WS qw(:opcodes);

my $ORG = 'org_' . random_hex(32);
my $KEY = make_api_key('live');
my $SRC1 = 'src_' . random_hex(32);
my $SRC2 = 'src_' . random_hex(32);

$ENV{TEST_NGINX_DIRJSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC1, $SRC2] },
});

$main::org = $ORG;
$main::src1 = $main::src2 = '';
$ENV{TEST_NGINX_PORT2} = free_port();
$main::key = $KEY;
$main::src1 = $SRC1;
$main::src2 = $SRC2;

sub pub {
    my (@msgs) = @_;

    my $body = join '', map { encode_json({ org_id => $main::org, %$_ }) . "\n" }
               @msgs;
    my $r = http_post('/internal/publish', $body);
    return $r->json;
}

sub dash {
    my ($q, %o) = @_;

    my $c = ws_connect("/v1/ws?token=$main::key" . ($q // ''), %o);
    return $c if !$c->upgraded;

    my $w = $c->recv_json(5);
    $c->{welcome} = $w;
    return $c;
}

# the next message that is not a ping
sub next_msg {
    my ($c, $t) = @_;

    for (1 .. 20) {
        my $m = $c->recv_json($t // 3);
        return $m if !$m || $m->{type} ne 'ping';
    }
    return undef;
}

$main::pub = \&pub;
$main::dash = \&dash;
$main::next_msg = \&next_msg;

workers(2);
run_tests();

__DATA__

=== TEST 1: the welcome, then every channel until the first subscribe
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $c = $main::dash->();
ok $c->upgraded, "upgraded";
my $w = $c->{welcome};
is $w->{type}, 'welcome', "welcome first";
is $w->{data}{org_id}, $main::org, "org_id";
like $w->{data}{connection_id}, qr/^conn_[0-9a-f]{32}$/, "connection_id";
is $w->{data}{heartbeat_s}, 30, "heartbeat_s";
like $w->{data}{cursor}, qr/^[0-9a-f]+-\d+$/, "cursor";

my $r = $main::pub->(
    { type => 'delivery', channel => 'deliveries', data => { id => 1 } },
    { type => 'issue', channel => 'issues', data => { id => 2 } },
    { type => 'sync', channel => 'collections', data => { id => 3 } },
    { type => 'custom', channel => 'my.custom-chan_1', data => { id => 4 } },
);
is $r->{published}, 4, "4 published";

my @got = map { $main::next_msg->($c) } 1 .. 4;
is_deeply [map { "$_->{type}/$_->{channel}/$_->{data}{id}" } @got],
          ['delivery/deliveries/1', 'issue/issues/2', 'sync/collections/3',
           'custom/my.custom-chan_1/4'],
          "every channel, in order";
like $got[0]{cursor}, qr/^[0-9a-f]+-\d+$/, "each carries a cursor";



=== TEST 2: subscribe filters by channel and by key; unsubscribe
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $c = $main::dash->();
$c->send_json({ type => 'subscribe', channel => 'deliveries' });
is_deeply $main::next_msg->($c), { type => 'subscribed', channel => 'deliveries' },
          "subscribed";

my $k = $main::dash->();
$k->send_json({ type => 'subscribe', channel => "events:$main::src1" });
is $main::next_msg->($k)->{type}, 'subscribed', "keyed subscription";
$k->send_json({ type => 'subscribe', channel => 'deliveries:dst_' . ('1' x 32) });
is $main::next_msg->($k)->{type}, 'subscribed', "second keyed subscription";

$main::pub->(
    { type => 'issue', channel => 'issues', data => { n => 1 } },
    { type => 'delivery', channel => 'deliveries',
      data => { n => 2, destination_id => 'dst_' . ('2' x 32) } },
    { type => 'event', channel => 'events',
      data => { n => 3, source_id => $main::src2 } },
    { type => 'event', channel => 'events',
      data => { n => 4, source_id => $main::src1 } },
    { type => 'delivery', channel => 'deliveries:dst_' . ('1' x 32),
      data => { n => 5 } },
);

my $m = $main::next_msg->($c);
is $m->{data}{n}, 2, "deliveries only: first is n=2";
$m = $main::next_msg->($c);
is $m->{data}{n}, 5, "then n=5";

$m = $main::next_msg->($k);
is $m->{data}{n}, 4, "events:src1 gets the event of src1 only";
$m = $main::next_msg->($k);
is $m->{data}{n}, 5, "deliveries:dst_1 gets its delivery";

$c->send_json({ type => 'unsubscribe', channel => 'deliveries' });
is_deeply $main::next_msg->($c), { type => 'unsubscribed', channel => 'deliveries' },
          "unsubscribed";

$main::pub->({ type => 'delivery', channel => 'deliveries', data => { n => 6 } });
ok !$main::next_msg->($c, 1), "nothing after the last channel is gone";



=== TEST 3: client errors keep the connection open
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws { hookstream_stream; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $c = $main::dash->();

for my $case (['not json', 'invalid_json'],
              ['[1]', 'invalid_json'],
              ['{"type":"dance"}', 'unknown_type'],
              ['{"channel":"x"}', 'unknown_type'],
              ['{"type":"subscribe"}', 'invalid_channel'],
              ['{"type":"subscribe","channel":"Bad Channel"}', 'invalid_channel'],
              ['{"type":"subscribe","channel":"' . ('a' x 200) . '"}',
               'invalid_channel'])
{
    $c->send_text($case->[0]);
    my $m = $main::next_msg->($c);
    is $m->{type}, 'error', "$case->[1]: error";
    is $m->{data}{code}, $case->[1], "code for " . substr($case->[0], 0, 30);
}

for my $n (1 .. 64) {
    $c->send_json({ type => 'subscribe', channel => "chan$n" });
}
my @ok = grep { $_ && $_->{type} eq 'subscribed' }
         map { $main::next_msg->($c) } 1 .. 64;
is scalar @ok, 64, "64 subscriptions";

$c->send_json({ type => 'subscribe', channel => 'one-too-many' });
is $main::next_msg->($c)->{data}{code}, 'too_many_subscriptions', "the 65th";

$c->send_json({ type => 'ping' });
is $main::next_msg->($c)->{type}, 'pong', "a client ping gets a pong";



=== TEST 4: the JSON heartbeat: ping, pong keeps it, silence closes 4000
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws {
    hookstream_stream;
    hookstream_heartbeat 1s 1s;
}
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $c = $main::dash->();
is $c->{welcome}{data}{heartbeat_s}, 1, "heartbeat_s";

for my $n (1 .. 3) {
    my $m = $c->recv_json(3);
    is $m && $m->{type}, 'ping', "ping $n";
    $c->send_json({ type => 'pong' });
}

my $p = $main::dash->();
$p->send_pong('');
for my $n (1 .. 2) {
    my $f = $p->recv_frame(3);
    is $f && $f->{payload}, '{"type":"ping"}', "ping $n (answered by a pong frame)";
    $p->send_pong('');
}

my $s = $main::dash->();
my $m = $s->recv_json(3);
is $m->{type}, 'ping', "ping";
my ($code, $reason, $closed) = $s->recv_close(5);
is $code, 4000, "no pong: 4000";
is $reason, 'heartbeat timeout', "reason";

$m = $c->recv_json(3);
is $m && $m->{type}, 'ping', "the answering client is still served";
--- error_log
client missed its heartbeat



=== TEST 5: a slow consumer is closed with 4008; 20 fast ones get everything
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
server {
    # a small socket buffer, so what a client does not read stays queued
    listen 127.0.0.1:$TEST_NGINX_PORT2 sndbuf=4k;
    location = /v1/ws {
        hookstream_stream;
        hookstream_send_queue 64k;
    }
}
--- config
location = /internal/publish { hookstream_publish; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
# the slow one never reads
my $port = $ENV{TEST_NGINX_PORT2};
my $slow = $main::dash->('', port => $port);
setsockopt($slow->sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 4096);

my @fast = map { $main::dash->('', port => $port) } 1 .. 20;
my $pad = 'x' x 2000;
my $total = 300;

for my $batch (0 .. 14) {
    $main::pub->(map { { type => 'delivery', channel => 'deliveries',
                         data => { n => $batch * 20 + $_, pad => $pad } } }
                 1 .. 20);

    # the fast ones read as they go
    for my $f (@fast) {
        for (1 .. 20) {
            my $m = $main::next_msg->($f, 5);
            push @{ $f->{got} }, $m ? $m->{data}{n} : -1;
        }
    }

    # once its queue passed 64k, the slow one reads: what it had, then 4008
    next if defined $slow->{code}
            || error_log_text() !~ /client is too slow/;

    for (1 .. 1000) {
        my $f = $slow->recv_frame(3);
        last if !$f;
        if ($f->{opcode} == OP_CLOSE) {
            $slow->{code} = unpack 'n', $f->{payload};
            last;
        }
    }
    $slow->{code} //= 0;
}

my $all = 1;
for my $f (@fast) {
    next if join(',', @{ $f->{got} }) eq join(',', 1 .. $total);
    $all = 0;
    diag "got: @{ $f->{got} }";
}
ok $all, "20 fast consumers got all $total messages in order";

is $slow->{code}, 4008, "the slow consumer is closed with 4008";
--- error_log
client is too slow



=== TEST 6: hookstream_max_connections_per_org: 429 before the upgrade
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws {
    hookstream_stream;
    hookstream_max_connections_per_org 3;
}
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my @c = map { $main::dash->() } 1 .. 3;
ok !(grep { !$_->upgraded } @c), "three connections";

my $x = ws_connect("/v1/ws?token=$main::key");
is $x->status, 429, "the fourth: 429";
is $x->json->{status}, 429, "JSON body";

$c[0]->send_close(1000);
$c[0]->recv_close(3);
sleep 0.3;

$x = $main::dash->();
ok $x->upgraded, "a place freed by a close is given back";



=== TEST 7: publish: per-line errors, the good lines still go out
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
location = /secret/publish {
    hookstream_publish;
    hookstream_publish_secret s3cret;
}
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $c = $main::dash->();
my $o = $main::org;

my $body = join "\n",
    qq({"org_id":"$o","type":"delivery","channel":"deliveries","data":{"big":18446744073709551615,"t":1.50}}),
    qq(not json),
    qq({"org_id":"nope","type":"delivery","channel":"deliveries","data":{}}),
    qq({"org_id":"$o","type":"delivery","channel":"Bad!","data":{}}),
    qq({"org_id":"$o","type":"delivery","channel":"deliveries"}),
    qq(),
    qq({"org_id":"$o","type":"issue","channel":"issues","data":[1,"two",{"3":null}]});

my $r = http_post('/internal/publish', $body);
is $r->status, 200, "publish answers 200";
my $j = $r->json;
is $j->{published}, 2, "two published";
is_deeply [map { $_->{line} } @{ $j->{errors} }], [2, 3, 4, 5],
          "errors name lines 2 to 5";

my $m = $main::next_msg->($c);
like $c->last_text, qr/"data":\{"big":18446744073709551615,"t":1\.50\}/,
     "data carried byte for byte";
$m = $main::next_msg->($c);
like $c->last_text, qr/"data":\[1,"two",\{"3":null\}\]\}$/, "any JSON value";

$r = http_request('GET', '/internal/publish');
is $r->status, 405, "GET: 405";

$r = http_post('/secret/publish', qq({"org_id":"$o","type":"x","channel":"x","data":1}));
is $r->status, 401, "no secret: 401";
$r = http_post('/secret/publish', qq({"org_id":"$o","type":"x","channel":"x","data":1}),
               headers => [['X-Hookstream-Secret', 's3cret']]);
is $r->status, 200, "with the secret: 200";



=== TEST 8: reload: live clients get 1001, reconnect by cursor, lose nothing
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish { hookstream_publish; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my @c = map { $main::dash->() } 1 .. 6;

$main::pub->(map { { type => 'delivery', channel => 'deliveries',
                     data => { n => $_ } } } 1 .. 10);

my (%last, %got);
for my $i (0 .. $#c) {
    for (1 .. 10) {
        my $m = $main::next_msg->($c[$i]);
        push @{ $got{$i} }, $m->{data}{n};
        $last{$i} = $m->{cursor};
    }
}

ok reload_nginx(), "reloaded";

for my $i (0 .. $#c) {
    my ($code) = $c[$i]->recv_close(5);
    is $code, 1001, "client $i: 1001 from the old worker";
}

# published while the clients are away
$main::pub->(map { { type => 'delivery', channel => 'deliveries',
                     data => { n => $_ } } } 11 .. 20);

for my $i (0 .. $#c) {
    my $c = $main::dash->("&cursor=$last{$i}");
    ok $c->upgraded, "client $i reconnected";
    for (11 .. 20) {
        my $m = $main::next_msg->($c);
        push @{ $got{$i} }, $m ? $m->{data}{n} : -1;
    }
    is join(',', @{ $got{$i} }), join(',', 1 .. 20),
       "client $i: 1..20, no gap, no duplicate";
}
