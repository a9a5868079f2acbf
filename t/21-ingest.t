# Events in (docs/journal.md, docs/protocol.md): every acked event is in
# the journal, even across kill -9 of nginx mid-run; idempotency keys
# across workers and connections; HTTP webhooks with JSON, form, binary,
# large and chunked bodies; the docs' Node example.

use Test::Hookstream;
use Test::Hookstream::WS qw(:opcodes);
use IO::Select;
use Time::HiRes ();

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('live');

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

use vars qw($org $src $key);
($org, $src, $key) = ($ORG, $SRC, $KEY);

# every record of a journal directory, decoded
sub journal {
    my ($dir) = @_;
    my @out;

    opendir my $dh, $dir or return ();
    for my $name (sort grep { /\.ndjson$/ } readdir $dh) {
        open my $fh, '<:raw', "$dir/$name" or die "open $name: $!";
        while (my $line = <$fh>) {
            # a record cut by kill -9 has no newline yet: not acked either
            next if $line !~ /\n\z/;
            push @out, decode_json($line);
        }
    }

    return @out;
}

$main::journal = \&journal;

workers(2);
run_tests();

__DATA__

=== TEST 1: kill -9 mid-run with fsync on: every acked event is in the journal
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=on;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- allow_error_log
exited on signal 9
--- ws
my $total = 20000;
my @c = map { ws_connect("/v1/ws/source/$main::src?token=$main::key") } 1 .. 4;
ok !(grep { !$_->upgraded } @c), "4 connections";

# pipelined in rounds of 250 frames a connection, reading acks as they
# come, never more than 4,000 frames ahead of the acks; the moment half
# of them are acked, kill master and workers with SIGKILL (from inside
# the ack loop: a slow server must not let every ack in before the kill)
my (%acked, $sent, $killed);
my $deadline = time + 120;
$sent = 0;

my $take_acks = sub {
    my ($c, $t) = @_;
    while (my $f = $c->recv_frame($t)) {
        next if $f->{opcode} != OP_TEXT;
        my $m = decode_json($f->{payload});
        $acked{$m->{event_id}} = 1 if $m->{type} eq 'ack';
        $t = 0.001;

        if (!$killed && keys %acked >= $total / 2) {
            kill_nginx('KILL');
            $killed = keys %acked;
        }
    }
};

while (!$killed && time < $deadline) {
    if ($sent < $total && $sent - keys %acked < 4000) {
        for my $i (0 .. $#c) {
            $c[$i]->send_frames(map {
                { opcode => OP_TEXT,
                  payload => qq({"type":"load","data":{"c":$i,"n":)
                             . ($sent + $_) . '}}' }
            } 0 .. 249);
        }
        $sent += 250 * @c;
    }

    $take_acks->($_, 0.01) for @c;
}
ok $killed && $killed < $total,
   "nginx killed mid-run, with " . ($killed // 0) . " of $total acked";

# acks read after the kill were sent before it: drain what is buffered
$take_acks->($_, 0.5) for @c;

start_nginx();

my %stored;
$stored{$_->{id}}++ for $main::journal->(servroot() . "/journal");

my @lost = grep { !$stored{$_} } keys %acked;
is scalar @lost, 0, scalar(keys %acked) . " acked events, none lost"
    or diag "lost: @lost[0 .. 4]";
ok !(grep { $_ > 1 } values %stored), "no record twice";



=== TEST 2: an idempotency key: same id from another connection, one record
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=on;
--- config
location /v1/ws/source/ { hookstream_source; }
location /v1/ingest/ { hookstream_ingest; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
# many connections, so the kernel hands them to both workers
my @c = map { ws_connect("/v1/ws/source/$main::src?token=$main::key") } 1 .. 8;
my $msg = '{"type":"order.created","idempotency_key":"order-42","data":{"n":1}}';

my %ids;
my $dups = 0;
for my $c (@c) {
    $c->send_text($msg);
    my $m = $c->recv_json;
    is $m->{type}, 'ack', "acked";
    $ids{$m->{event_id}}++;
    $dups++ if $m->{duplicate};
}
is scalar keys %ids, 1, "one event id for 8 sends";
is $dups, 7, "7 marked duplicate";

# over HTTP, the Idempotency-Key header, scoped like the socket's key
my $r1 = http_post("/v1/ingest/$main::src", '{"a":1}',
                   headers => [['Idempotency-Key', 'hook-7'],
                               ['Content-Type', 'application/json']]);
my $r2 = http_post("/v1/ingest/$main::src", '{"a":1}',
                   headers => [['Idempotency-Key', 'hook-7']]);
is $r1->json->{event_id}, $r2->json->{event_id}, "HTTP retry: same id";
ok $r2->json->{duplicate}, "HTTP retry: duplicate";

# too long a key
$c[0]->send_text('{"idempotency_key":"' . ('k' x 256) . '"}');
is $c[0]->recv_json->{data}{code}, 'invalid_idempotency_key', "256 bytes: error";
$c[0]->send_text('{"idempotency_key":"' . ('k' x 255) . '"}');
is $c[0]->recv_json->{type}, 'ack', "255 bytes: acked";

my @recs = grep { ($_->{idempotency_key} // '') eq 'order-42' }
           $main::journal->(servroot() . "/journal");
is scalar @recs, 1, "one journal record for the key";
is $recs[0]{id}, (keys %ids)[0], "the record has the acked id";



=== TEST 3: webhooks: JSON, form, binary, 1 MB, chunked
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=off;
--- config
location /v1/ingest/ {
    hookstream_ingest;
    client_max_body_size 2m;
}
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $u = "/v1/ingest/$main::src";
my %want;

my $r = http_post("$u?x=1&y=two", '{"type":"invoice.paid","n":18446744073709551615}',
                  headers => [['Content-Type', 'application/json'],
                              ['X-Signature', 'abc']]);
is $r->status, 200, "JSON: 200";
is $r->json->{source_id}, $main::src, "source_id";
like $r->json->{event_id}, qr/^evt_[0-9a-f]{32}$/, "event_id";
$want{$r->json->{event_id}} = 'json';

$r = http_post($u, 'a=1&b=hello+world',
               headers => [['Content-Type', 'application/x-www-form-urlencoded']]);
$want{$r->json->{event_id}} = 'form';

my $bin = join '', map { chr } 0 .. 255;
$r = http_post($u, $bin, headers => [['Content-Type', 'application/octet-stream']]);
$want{$r->json->{event_id}} = 'binary';

my $big = '{"pad":"' . ('z' x (1024 * 1024)) . '"}';
$r = http_post($u, $big, headers => [['Content-Type', 'application/json']]);
is $r->status, 200, "1 MB: 200";
$want{$r->json->{event_id}} = 'big';

$r = http_request('PUT', $u, raw_body => 1,
                  headers => [['Transfer-Encoding', 'chunked'],
                              ['Content-Type', 'text/plain']],
                  body => "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
is $r->status, 200, "chunked: 200";
$want{$r->json->{event_id}} = 'chunked';

$r = http_request('GET', "/v1/ingest/src_" . ('0' x 32));
is $r->status, 404, "unknown source: 404";
is $r->json->{error}, 'Source not found', "JSON error";

sleep 0.5;
my %rec = map { $_->{id} => $_ } $main::journal->(servroot() . "/journal");
my %kind = reverse %want;

my $j = $rec{$kind{json}};
is $j->{method}, 'POST', "json: method";
is $j->{type}, 'invoice.paid', "json: type read from the body";
is $j->{query}, 'x=1&y=two', "json: query";
is $j->{path}, $u, "json: path";
is $j->{content_type}, 'application/json', "json: content type";
is $j->{headers}{'X-Signature'}, 'abc', "json: headers kept";
ok !exists $j->{headers}{Connection}, "json: hop-by-hop headers left out";
like $j->{source_ip}, qr/^127\.0\.0\.1$/, "json: source ip";

my $raw = '';
for my $seg (glob(servroot() . "/journal/*.ndjson")) {
    open my $fh, '<', $seg or die "$seg: $!";
    $raw .= join '', <$fh>;
}
like $raw, qr/"body":\{"type":"invoice\.paid","n":18446744073709551615\}/,
     "json: the body byte for byte";

is $rec{$kind{form}}{body}, 'a=1&b=hello+world', "form: a string";
is $rec{$kind{binary}}{body}{base64}, MIME::Base64::encode_base64($bin, ''),
   "binary: base64";
is length $rec{$kind{big}}{body}{pad}, 1024 * 1024, "1 MB body kept whole";
is $rec{$kind{chunked}}{body}, 'hello world', "chunked: joined";
is $rec{$kind{chunked}}{method}, 'PUT', "any method";



=== TEST 4: the docs' Node example with the ws package gets an ack
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=on;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $dir = repo_root() . "/t/node";
my $port = server_port();
my $out = `cd $dir && node inbound-example.js ws://127.0.0.1:$port $main::src $main::key 2>&1`;
is $?, 0, "node exited 0" or diag $out;
chomp $out;
like $out, qr/^evt_[0-9a-f]{32}$/, "printed the ack's event_id";

sleep 0.2;
my @r = grep { $_->{id} eq $out } $main::journal->(servroot() . "/journal");
is scalar @r, 1, "the event is in the journal";
is $r[0]{type}, 'order.created', "with its type";



=== TEST 5: clients that leave before their events are synced
--- http_config
hookstream_zone hookstream 8m;
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=on;
--- config
location /v1/ws/source/ { hookstream_source; }
location /v1/ws { hookstream_stream; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
# a dashboard sees the events that were stored after their connection
# closed: each event carries its own ids, not its connection's
my $d = ws_connect("/v1/ws?token=$main::key");
ok $d->upgraded, "dashboard";
my $w = $d->recv_json;
is $w && $w->{type}, 'welcome', "welcome";

for my $round (1 .. 20) {
    my $c = ws_connect("/v1/ws/source/$main::src?token=$main::key");
    $c->send_frames(map {
        { opcode => OP_TEXT,
          payload => qq({"type":"gone","data":{"r":$round,"n":$_}}) }
    } 1 .. 50);
    $c->disconnect;
}

my %seen;
while (my $m = $d->recv_json(3)) {
    next if $m->{type} ne 'event';
    $seen{$m->{data}{source_id} // ''}++;
}

my $n = $seen{$main::src} // 0;
ok $n > 0, "$n events of closed connections published";
is scalar(keys %seen), 1, "all with the source's id";

# what was stored is whole
my @r = grep { ($_->{type} // '') eq 'gone' }
        $main::journal->(servroot() . "/journal");
ok !(grep { $_->{source_id} ne $main::src || $_->{org_id} ne $main::org }
     @r), scalar(@r) . " records with the right ids";
