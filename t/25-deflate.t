# permessage-deflate (RFC 7692, docs/protocol.md): the answer to the
# client's offers, compressed messages out (built once per worker and
# message, shared by every deflate subscriber of that worker) and in
# (inflated within hookstream_max_message), the close codes for a
# compression bomb (1009) and for invalid compressed data (1007), and the
# extension off.  Clients: the harness's own, and Python's "websockets"
# (which offers permessage-deflate by default).

use Test::Hookstream;

use Compress::Raw::Zlib qw(Z_OK Z_STREAM_END Z_BUF_ERROR Z_SYNC_FLUSH
                           Z_FINISH);
use Digest::SHA ();
use File::Temp ();

my $ROOT = repo_root();

my $KEY = do {
    open my $fh, '<', "$ROOT/examples/demo-key.txt" or die "demo key: $!";
    local $/;
    my $k = <$fh>;
    $k =~ s/\s+//g;
    $k;
};

my $DIRECTORY = do {
    open my $fh, '<', "$ROOT/examples/directory.json" or die "dir: $!";
    local $/;
    <$fh>;
};

my $ORG = (keys %{ decode_json($DIRECTORY)->{orgs} })[0];
my $SRC = decode_json($DIRECTORY)->{orgs}{$ORG}{sources}[0];

$ENV{TEST_NGINX_PORT2} = free_port();

our ($key, $org, $src) = ($KEY, $ORG, $SRC);

# what the module answers to an acceptable offer
our $ANSWER = 'permessage-deflate; server_no_context_takeover; '
              . 'client_no_context_takeover';


# The Python client.  Modes:
#   subscribe URL COMP CLIENTS COUNT  K dashboards, "ready" once all are
#       welcomed, then a digest of the COUNT "delivery" messages of each
#   source URL COMP COUNT SIZE        COUNT pipelined events, their acks
#   send URL COMP SIZE                one text message of SIZE "0"s; how
#       the server answered or closed
# COMP: "deflate" (the default offer), "none", or "bits=N" (an offer with
# server_max_window_bits=N).

my $PYTHON = <<'PY';
import asyncio, hashlib, json, re, sys
import websockets
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory)


def connect(url, comp):
    kw = dict(max_size=None, ping_interval=None, open_timeout=10,
              close_timeout=5)
    if comp == "none":
        return websockets.connect(url, compression=None, **kw)
    if comp.startswith("bits="):
        f = ClientPerMessageDeflateFactory(
            server_max_window_bits=int(comp[5:]), client_max_window_bits=True)
        return websockets.connect(url, compression=None, extensions=[f], **kw)
    return websockets.connect(url, **kw)


def ext(ws):
    print("ext", json.dumps(ws.response_headers.get(
        "Sec-WebSocket-Extensions")), json.dumps(
        [type(e).__name__ for e in ws.extensions]), flush=True)


async def subscribe(url, comp, k, count):
    conns = []
    for _ in range(k):
        ws = await connect(url, comp)
        ext(ws)
        w = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert w["type"] == "welcome", w
        conns.append(ws)
    print("ready", flush=True)
    for ws in conns:
        h = hashlib.sha256()
        n = 0
        while n < count:
            m = await asyncio.wait_for(ws.recv(), 30)
            if json.loads(m)["type"] != "delivery":
                continue
            h.update(m.encode() + b"\n")
            n += 1
        print("digest", n, h.hexdigest(), flush=True)
    for ws in conns:
        await ws.close()


async def source(url, comp, count, size):
    ws = await connect(url, comp)
    ext(ws)
    for i in range(count):
        await ws.send(json.dumps({"type": "order.created",
                                  "data": {"i": i, "pad": "ab" * (size // 2)}}))
    ok = 0
    for i in range(count):
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("type") == "ack" and re.match(r"^evt_[0-9a-f]{32}$",
                                               m.get("event_id", "")):
            ok += 1
        else:
            print("unexpected", json.dumps(m), flush=True)
    print("acks", ok, flush=True)
    await ws.close()


async def send(url, comp, size):
    ws = await connect(url, comp)
    ext(ws)
    await ws.send("0" * size)
    try:
        m = await asyncio.wait_for(ws.recv(), 10)
        print("reply", m, flush=True)
    except websockets.ConnectionClosed as e:
        print("closed", e.code, e.reason, flush=True)


mode, args = sys.argv[1], sys.argv[2:]
if mode == "subscribe":
    asyncio.run(subscribe(args[0], args[1], int(args[2]), int(args[3])))
elif mode == "source":
    asyncio.run(source(args[0], args[1], int(args[2]), int(args[3])))
else:
    asyncio.run(send(args[0], args[1], int(args[2])))
PY

my $py_file = File::Temp->new(SUFFIX => '.py');
print {$py_file} $PYTHON;
close $py_file;

our $py_script = "$py_file";


# runs the Python client to the end; its output lines
sub python {
    my (@args) = @_;

    open(my $fh, '-|', 'timeout', '120', '/usr/bin/python3',
         $main::py_script, @args) // die "python: $!";
    my @out = <$fh>;
    close $fh;

    Test::More::diag("python @args: exit $?\n", @out) if $?;
    chomp @out;

    return @out;
}


# the Python client in the background: (pid, fh) once it printed "ready"
sub python_start {
    my (@args) = @_;

    my $pid = open(my $fh, '-|', 'timeout', '120', '/usr/bin/python3',
                   $main::py_script, @args) // die "python: $!";

    my @before;

    while (my $l = <$fh>) {
        chomp $l;
        return ($pid, $fh, \@before) if $l eq 'ready';
        push @before, $l;
    }

    die "python did not get ready:\n" . join("\n", @before);
}


# publishes one "delivery" per data text to the org, as NDJSON, to the
# publish location on $port
sub publish {
    my ($port, @data) = @_;

    my $body = join '', map {
        qq({"org_id":"$main::org","type":"delivery","channel":"deliveries",)
        . qq("data":$_}\n)
    } @data;

    my $r = http_post('/internal/publish', $body,
                      port => $port, tls => 0, timeout => 20);
    my $j = $r->json;

    return $j && $j->{published} == @data;
}


# data texts of many sizes, from a few bytes to past the 32K window
sub payloads {
    my ($n) = @_;

    my @sizes = (1, 30, 100, 300, 700, 2000, 5000, 40000, 100000);
    my @data;

    for my $i (0 .. $n - 1) {
        my $size = $sizes[$i % @sizes];
        my $words = join ' ', map { "word$_" } 1 .. int($size / 7) + 1;
        push @data, qq({"i":$i,"text":") . substr($words, 0, $size)
                    . qq(","utf8":"\x{e9}t\x{e9} \x{2603}"});
    }

    utf8::encode($_) for @data;

    return @data;
}


# a dashboard (harness client) with its welcome read
sub dashboard {
    my (%o) = @_;

    my $c = ws_connect("/v1/ws?token=$main::key", timeout => 10, %o);
    die 'dashboard: ' . ($c->status // $c->error // '?') if !$c->upgraded;

    my $w = $c->recv_json(10);
    die 'dashboard: no welcome' if !$w || $w->{type} ne 'welcome';

    return $c;
}


# the next $n "delivery" messages of a harness client:
# (digest, compressed count, texts)
sub deliveries {
    my ($c, $n) = @_;

    my ($d, $z, @texts) = (Digest::SHA->new(256), 0);

    while (@texts < $n) {
        my $m = $c->recv_message(30) or last;
        next if $m->{payload} !~ /"type":"delivery"/;
        $z++ if $m->{compressed};
        $d->add($m->{payload} . "\n");
        push @texts, $m->{payload};
    }

    return ($d->hexdigest, $z, \@texts);
}


# raw DEFLATE of $data with a sync flush, the 00 00 ff ff cut
sub deflate_raw {
    my ($data, %o) = @_;

    my ($z) = Compress::Raw::Zlib::Deflate->new(
        -WindowBits => -($o{bits} // 15), -AppendOutput => 1);
    my $out = '';

    $z->deflate($data, $out) == Z_OK or die 'deflate';

    if ($o{final}) {
        $z->flush($out, Z_FINISH) == Z_OK or die 'flush';
        return $out;
    }

    $z->flush($out, Z_SYNC_FLUSH) == Z_OK or die 'flush';
    $out =~ s/\x00\x00\xff\xff\z// or die 'no sync flush marker';

    return $out;
}


# inflates a server message with a given window, as a client limited to
# it would: undef if it refers further back than the window
sub inflate_with {
    my ($data, $bits) = @_;

    my ($z) = Compress::Raw::Zlib::Inflate->new(
        -WindowBits => -$bits, -AppendOutput => 1, -ConsumeInput => 1,
        -LimitOutput => 0);
    my $in = $data . "\x00\x00\xff\xff";
    my $out = '';
    my $st = $z->inflate($in, $out);

    return ($st == Z_OK || $st == Z_BUF_ERROR || $st == Z_STREAM_END)
           ? $out : undef;
}


$main::python = \&python;
$main::python_start = \&python_start;
$main::publish = \&publish;
$main::payloads = \&payloads;
$main::dashboard = \&dashboard;
$main::deliveries = \&deliveries;
$main::deflate_raw = \&deflate_raw;
$main::inflate_with = \&inflate_with;


run_tests();

__DATA__

=== TEST 1: the answer to offers: parameters, several offers, declines
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location = /v1/ws { hookstream_stream; hookstream_deflate on; }
--- ws
my $A = $main::ANSWER;

my @cases = (
    # what most clients offer (browsers, Python, node's ws)
    ['permessage-deflate; client_max_window_bits', $A],
    ['permessage-deflate', $A],
    ['permessage-deflate; server_no_context_takeover; '
     . 'client_no_context_takeover', $A],
    ['permessage-deflate; client_max_window_bits=10', $A],

    # a limit on the server's window is accepted as offered
    ['permessage-deflate; server_max_window_bits=10',
     "$A; server_max_window_bits=10"],
    ['permessage-deflate;server_max_window_bits="12";client_max_window_bits',
     "$A; server_max_window_bits=12"],
    ['permessage-deflate; server_max_window_bits=8',
     "$A; server_max_window_bits=8"],
    ['PerMessage-Deflate ; Server_Max_Window_Bits = 15',
     "$A; server_max_window_bits=15"],

    # the first acceptable of several offers; other extensions ignored
    ['x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7,'
     . ' permessage-deflate; server_max_window_bits=11, permessage-deflate',
     "$A; server_max_window_bits=11"],
    ['foo; bar="a\\"b,c"; baz, permessage-deflate', $A],
    [', permessage-deflate; client_max_window_bits,', $A],

    # offers declined: the upgrade goes on without the extension
    ['permessage-deflate; foo', undef],
    ['permessage-deflate; server_max_window_bits', undef],
    ['permessage-deflate; server_max_window_bits=16', undef],
    ['permessage-deflate; server_max_window_bits=09', undef],
    ['permessage-deflate; server_max_window_bits=x', undef],
    ['permessage-deflate; client_max_window_bits=7', undef],
    ['permessage-deflate; client_max_window_bits=""', undef],
    ['permessage-deflate; server_no_context_takeover=1', undef],
    ['permessage-deflate; client_no_context_takeover; '
     . 'client_no_context_takeover', undef],
    ['permessage-deflate; server_max_window_bits=10; '
     . 'server_max_window_bits=10', undef],
    ['x-webkit-deflate-frame', undef],

    # malformed headers: declined as a whole
    ['permessage-deflate; =1', undef],
    ['permessage-deflate; server_max_window_bits="10', undef],
    ['permessage-deflate; a b', undef],
    ['permessage-deflate, ;', undef],
    ['permessage-deflate; server_max_window_bits=', undef],
);

for my $case (@cases) {
    my ($offer, $want) = @$case;

    my $c = ws_connect("/v1/ws?token=$main::key", deflate => $offer);
    ok $c->upgraded, "upgraded: $offer" or diag $c->status;
    is $c->header('Sec-WebSocket-Extensions'), $want, "answer to: $offer";

    my $w = $c->recv_json;
    is $w && $w->{type}, 'welcome', "welcome after: $offer";

    $c->disconnect;
}

# offers over several header lines are one list (RFC 6455 9.1)

my $c = ws_connect("/v1/ws?token=$main::key", headers => [
    ['Sec-WebSocket-Extensions', 'x-unknown; a=1'],
    ['Sec-WebSocket-Extensions',
     'permessage-deflate; server_max_window_bits=9'],
]);
is $c->header('Sec-WebSocket-Extensions'),
   "$A; server_max_window_bits=9", 'offers over two header lines';
$c->disconnect;

$c = ws_connect("/v1/ws?token=$main::key", headers => [
    ['Sec-WebSocket-Extensions', 'permessage-deflate; ;'],
    ['Sec-WebSocket-Extensions', 'permessage-deflate'],
]);
ok $c->upgraded, 'a malformed line: upgraded';
is $c->header('Sec-WebSocket-Extensions'), undef,
   'a malformed line: declined as a whole';
$c->disconnect;

# no offer: no extension

$c = ws_connect("/v1/ws?token=$main::key");
is $c->header('Sec-WebSocket-Extensions'), undef, 'no offer, no answer';
$c->disconnect;
--- no_error_log
[error]
[warn]
--- error_log
client sent invalid "Sec-WebSocket-Extensions" header



=== TEST 2: Python's websockets negotiates it; dashboard messages inflate
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location = /v1/ws { hookstream_stream; hookstream_deflate on; }
location = /internal/publish {
    hookstream_publish;
    client_body_buffer_size 1m;
}
--- ws
my @data = main::payloads(18);
my $port = server_port();

my ($pid, $fh, $before) = main::python_start(
    'subscribe', "ws://127.0.0.1:$port/v1/ws?token=$main::key", 'deflate',
    2, scalar @data);

like $before->[0], qr/^ext "\Q$main::ANSWER\E" \["PerMessageDeflate"\]$/,
     'python: negotiated';

my $c = main::dashboard(deflate => 1);
is $c->header('Sec-WebSocket-Extensions'), $main::ANSWER, 'harness: answer';

# the harness compresses what it sends once negotiated

ok $c->send_json({ type => 'subscribe', channel => 'deliveries' }),
   'harness: a compressed subscribe';
json_ok $c->recv_json, { type => 'subscribed', channel => 'deliveries' },
        'harness: subscribed';

ok main::publish(server_port(), @data), 'published';

my ($digest, $z, $texts) = main::deliveries($c, scalar @data);
is scalar @$texts, scalar @data, 'harness: every message';

my $ok = 0;

for my $i (0 .. $#data) {
    my $m = eval { decode_json($texts->[$i]) } or last;
    $ok++ if encode_json($m->{data}) eq encode_json(decode_json($data[$i]));
}

is $ok, scalar @data, 'harness: every message inflated to its data';
is $z, scalar @data, 'harness: every message came compressed';

my @after = <$fh>;
close $fh;
chomp @after;

is $?, 0, 'python: ran to the end' or diag join "\n", @after;
is_deeply [grep { /^digest/ } @after],
          [("digest " . scalar(@data) . " $digest") x 2],
          'python: both clients got the same bytes as the harness';
--- no_error_log
[error]
[warn]
--- error_log eval
[qr/hookstream deflate: accepted, server window bits 15/,
 qr/hookstream deflate: worker deflate stream created/]



=== TEST 3: a client's window limit: longer messages go uncompressed
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location = /v1/ws { hookstream_stream; hookstream_deflate on; }
location = /internal/publish {
    hookstream_publish;
    client_body_buffer_size 1m;
}
--- ws
my @data = main::payloads(18);
my $port = server_port();

my ($pid, $fh, $before) = main::python_start(
    'subscribe', "ws://127.0.0.1:$port/v1/ws?token=$main::key", 'bits=9',
    1, scalar @data);

like $before->[0],
     qr/^ext "\Q$main::ANSWER\E; server_max_window_bits=9"/,
     'python: server_max_window_bits=9 accepted';

my $c9 = main::dashboard(
    deflate => 'permessage-deflate; server_max_window_bits=9');
my $c15 = main::dashboard(deflate => 1);

ok main::publish(server_port(), @data), 'published';

my ($d15, $z15) = main::deliveries($c15, scalar @data);

# the raw frames of the limited client, inflated with a 512-byte window

my ($n, $small, $big, $bad, $plain) = (0, 0, 0, 0, 0);
my $digest = Digest::SHA->new(256);

while ($n < @data) {
    my $f = $c9->recv_frame(30) or last;
    my $payload = $f->{payload};

    if ($f->{rsv} & 4) {
        $payload = main::inflate_with($payload, 9);

        if (!defined $payload) {
            $bad++;
            next;
        }

        length $payload <= 512 ? $small++ : $big++;

    } elsif (length $payload > 512) {
        $plain++;
    }

    next if $payload !~ /"type":"delivery"/;
    $digest->add("$payload\n");
    $n++;
}

is $n, scalar @data, 'window 9: every message';
is $bad, 0, 'window 9: every compressed one inflates with a 512-byte window';
ok $small > 0, "window 9: messages up to 512 bytes compressed ($small)";
is $big, 0, 'window 9: none longer compressed';
ok $plain > 0, "window 9: longer ones plain ($plain)";
is $digest->hexdigest, $d15, 'window 9: the same bytes as window 15';
ok $z15 > $small, "window 15: more compressed ($z15)";

my @after = <$fh>;
close $fh;
chomp @after;

is $?, 0, 'python: ran to the end' or diag join "\n", @after;
is_deeply [grep { /^digest/ } @after], ["digest " . scalar(@data) . " $d15"],
          'python with window 9: the same bytes';
--- no_error_log
[error]
[warn]



=== TEST 4: hookstream_deflate off: never negotiated, nothing compressed
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location = /v1/ws { hookstream_stream; }
location = /internal/publish {
    hookstream_publish;
    client_body_buffer_size 1m;
}
location /v1/ws/source/ { hookstream_source; hookstream_deflate off; }
--- ws
my @data = main::payloads(9);
my $port = server_port();

my ($pid, $fh, $before) = main::python_start(
    'subscribe', "ws://127.0.0.1:$port/v1/ws?token=$main::key", 'deflate',
    1, scalar @data);

is $before->[0], 'ext null []', 'python: not negotiated';

my $c = main::dashboard(deflate => 1);
is $c->header('Sec-WebSocket-Extensions'), undef, 'harness: no answer';
ok !$c->deflate, 'harness: not negotiated';

ok main::publish(server_port(), @data), 'published';

my ($digest, $z, $texts) = main::deliveries($c, scalar @data);
is scalar @$texts, scalar @data, 'every message';
is $z, 0, 'none compressed';

my @after = <$fh>;
close $fh;
chomp @after;
is_deeply [grep { /^digest/ } @after],
          ["digest " . scalar(@data) . " $digest"], 'python: the same bytes';

# RSV1 without the extension is a protocol error

my $s = ws_connect("/v1/ws/source/$main::src?token=$main::key",
                   deflate => 1);
ok !$s->deflate, 'source: not negotiated';
$s->send_frame(opcode => OP_TEXT, rsv1 => 1,
               payload => main::deflate_raw('{"type":"x"}'));
my ($code) = $s->recv_close;
is $code, 1002, 'RSV1 without the extension: 1002';
--- no_error_log
[error]
[warn]
hookstream deflate:



=== TEST 5: inbound compressed messages are acked
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; hookstream_deflate on; }
--- ws
my $url = "/v1/ws/source/$main::src?token=$main::key";
my $ack = { type => 'ack', event_id => qr/^evt_[0-9a-f]{32}$/ };

my $c = ws_connect($url, deflate => 1);
is $c->header('Sec-WebSocket-Extensions'), $main::ANSWER, 'negotiated';

# one frame, compressed by the harness (a fresh context per message)

ok $c->send_text('{"type":"order.created","data":{"n":18446744073709551615,'
                 . '"s":"' . ('abc' x 500) . '"}}'), 'sent compressed';
json_ok $c->recv_json, $ack, 'compressed message: ack';

# fragments with a ping between them

my $z = main::deflate_raw('{"type":"order.created","data":{"t":"'
                          . ('xyz' x 3000) . '"}}');
my $third = int(length($z) / 3);

ok $c->send_frames(
    { opcode => OP_TEXT, rsv1 => 1, fin => 0,
      payload => substr($z, 0, $third) },
    { opcode => OP_CONT, fin => 0, payload => substr($z, $third, $third) },
    { opcode => OP_PING, payload => 'p' },
    { opcode => OP_CONT, fin => 1, payload => substr($z, 2 * $third) },
), 'sent in fragments';
json_ok $c->recv_json, $ack, 'fragmented compressed message: ack';
is $c->controls && ($c->controls)[-1]{payload}, 'p', 'the ping answered';

# a final block (BFINAL) instead of a sync flush, alone and followed by
# the empty block of RFC 7692 7.2.1 step 2; a small window; pipelined

ok $c->send_frames(
    { opcode => OP_TEXT, rsv1 => 1,
      payload => main::deflate_raw('{"type":"a.final","data":{}}',
                                   final => 1) },
    { opcode => OP_TEXT, rsv1 => 1,
      payload => main::deflate_raw('{"type":"b.final","data":{}}',
                                   final => 1) . "\x00" },
    { opcode => OP_TEXT, rsv1 => 1,
      payload => main::deflate_raw('{"type":"c","data":"' . ('q' x 100)
                                   . '"}', bits => 9) },
), 'sent with BFINAL, and with a small window';
json_ok $c->recv_json, $ack, 'BFINAL: ack';
json_ok $c->recv_json, $ack, 'BFINAL and an empty block: ack';
json_ok $c->recv_json, $ack, 'small window: ack';

# the example of RFC 7692 7.2.3.3: "Hello" with BFINAL (not JSON)

ok $c->send_frame(opcode => OP_TEXT, rsv1 => 1,
                  payload => "\xf3\x48\xcd\xc9\xc9\x07\x00\x00"),
   'sent the example of 7.2.3.3';
json_ok $c->recv_json, { type => 'error', data => { code => 'invalid_json' } },
        'the example inflated and handed on';

# uncompressed messages stay allowed on a deflate connection

ok $c->send_text('{"type":"plain"}', compress => 0), 'sent uncompressed';
json_ok $c->recv_json, $ack, 'uncompressed message: ack';

# empty compressed messages: an empty payload and a 0x00 block

$c->send_frame(opcode => OP_TEXT, rsv1 => 1, payload => '');
json_ok $c->recv_json, { type => 'error', data => { code => 'invalid_json' } },
        'empty compressed payload: an empty message';
$c->send_frame(opcode => OP_TEXT, rsv1 => 1, payload => "\x00");
json_ok $c->recv_json, { type => 'error', data => { code => 'invalid_json' } },
        'one empty stored block: an empty message';

# binary: inflated, then refused by the endpoint as usual

ok $c->send_binary('{"type":"bin"}'), 'sent compressed binary';
json_ok $c->recv_json,
        { type => 'error', data => { code => 'binary_not_supported' } },
        'compressed binary: the endpoint answers';

my ($code) = $c->close;
is $code, 1000, 'closed normally';

# Python's websockets compresses every message: 40 pipelined events

my $port = is_tls() ? undef : server_port();

SKIP: {
    skip 'python runs on the plain pass', 2 if is_tls();

    my @out = main::python('source', "ws://127.0.0.1:$port$url", 'deflate',
                           40, 3000);
    like $out[0], qr/^ext "\Q$main::ANSWER\E"/, 'python: negotiated';
    is $out[-1], 'acks 40', 'python: 40 compressed events acked';
}
--- tls
--- no_error_log
[error]
[warn]
--- error_log eval
[qr/hookstream deflate: inflated \d+ to 9\d\d\d bytes/,
 qr/hookstream deflate: inflated 8 to 5 bytes/,
 qr/worker inflate stream created/]



=== TEST 6: compression bomb: 1009; the limit is the inflated size
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location /v1/ws/source/ {
    hookstream_source;
    hookstream_deflate on;
    hookstream_max_message 1m;
}
--- ws
my $url = "/v1/ws/source/$main::src?token=$main::key";

# 10 MB of zeros are about 10 KB compressed

my $bomb = main::deflate_raw("\0" x 10_000_000);
cmp_ok length $bomb, '<', 20_000, 'the bomb is small: ' . length $bomb;

my $c = ws_connect($url, deflate => 1);
ok $c->send_frame(opcode => OP_BINARY, rsv1 => 1, payload => $bomb),
   'sent the bomb';
my ($code, $reason) = $c->recv_close;
is $code, 1009, 'bomb: 1009';
is $reason, 'message too big', 'bomb: reason';

# a text message of exactly 1m inflated is accepted, one byte more is not

my $head = '{"type":"big","data":"';
my $tail = '"}';
my $exact = $head . ('z' x (1048576 - length($head) - length($tail))) . $tail;

$c = ws_connect($url, deflate => 1);
ok $c->send_frame(opcode => OP_TEXT, rsv1 => 1,
                  payload => main::deflate_raw($exact)), 'sent 1m';
json_ok $c->recv_json(10), { type => 'ack' }, 'exactly the limit: ack';

ok $c->send_frame(opcode => OP_TEXT, rsv1 => 1,
                  payload => main::deflate_raw($exact . ' ')), 'sent 1m + 1';
($code) = $c->recv_close;
is $code, 1009, 'one byte over the limit: 1009';

# Python: 10 MB of "0" characters, compressed by the client

SKIP: {
    skip 'python runs on the plain pass', 2 if is_tls();

    my $port = server_port();
    my @out = main::python('send', "ws://127.0.0.1:$port$url", 'deflate',
                           10_000_000);
    like $out[0], qr/^ext "\Q$main::ANSWER\E"/, 'python: negotiated';
    is $out[-1], 'closed 1009 message too big', 'python: bomb closed 1009';
}
--- tls
--- no_error_log
[error]
[warn]
--- error_log
client sent a compressed message of more than 1048576 bytes inflated



=== TEST 7: invalid compressed data: 1007
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
--- config
location /v1/ws/source/ { hookstream_source; hookstream_deflate on; }
--- ws
my $url = "/v1/ws/source/$main::src?token=$main::key";
my $good = main::deflate_raw('{"type":"x","data":"' . ('ab' x 300) . '"}');

my @cases = (
    ['not DEFLATE at all', "\xff\xfe\xfd\xfc\xfb"],
    ['a reserved block type', "\x07\x00"],
    ['cut within a block', substr($good, 0, length($good) - 3)],
    ['invalid UTF-8 once inflated', main::deflate_raw("{\"t\":\"\xc3\x28\"}")],
);

for my $case (@cases) {
    my ($name, $payload) = @$case;

    my $c = ws_connect($url, deflate => 1);
    ok $c->send_frame(opcode => OP_TEXT, rsv1 => 1, payload => $payload),
       "sent $name";
    my ($code, $reason) = $c->recv_close;
    is $code, 1007, "$name: 1007";
    like $reason, qr/^invalid (compressed data|UTF-8 in text message)$/,
         "$name: reason";
}

# a client that keeps its context although the answer said not to

my $c = ws_connect($url, deflate => 1);
my ($z) = Compress::Raw::Zlib::Deflate->new(-WindowBits => -15,
                                            -AppendOutput => 1);
my $msg = '{"type":"order.created","data":"' . ('0123456789' x 20) . '"}';

for my $i (1 .. 2) {
    my $out = '';
    $z->deflate($msg, $out);
    $z->flush($out, Z_SYNC_FLUSH);
    $out =~ s/\x00\x00\xff\xff\z//;
    $c->send_frame(opcode => OP_TEXT, rsv1 => 1, payload => $out);
}

json_ok $c->recv_json, { type => 'ack' }, 'context takeover: first acked';
my ($code) = $c->recv_close;
is $code, 1007, 'context takeover: the second refers back, 1007';

# RSV1 belongs on the first frame of a message only

$c = ws_connect($url, deflate => 1);
$c->send_frames(
    { opcode => OP_TEXT, fin => 0, payload => '{"type":' },
    { opcode => OP_CONT, rsv1 => 1, payload => '"x"}' },
);
($code) = $c->recv_close;
is $code, 1002, 'RSV1 on a continuation frame: 1002';
--- tls
--- no_error_log
[error]
[warn]
--- error_log
client sent invalid compressed data
client sent invalid UTF-8 in a compressed text message



=== TEST 8: two workers, subscribers of both kinds get the same messages
--- workers: 2
--- http_config
hookstream_zone hookstream 16m;
hookstream_directory $TEST_NGINX_REPO_ROOT/examples/directory.json;
server {
    listen 127.0.0.1:$TEST_NGINX_PORT2 reuseport;
    location = /v1/ws { hookstream_stream; hookstream_deflate on; }
    location = /internal/publish {
        hookstream_publish;
        client_body_buffer_size 1m;
    }
}
--- config
location /t { return 204; }
--- ws
my @data = main::payloads(45);
my $port = $ENV{TEST_NGINX_PORT2};
my $url = "ws://127.0.0.1:$port/v1/ws?token=$main::key";

my @py = ([main::python_start('subscribe', $url, 'deflate', 6,
                              scalar @data)],
          [main::python_start('subscribe', $url, 'none', 3, scalar @data)]);

my (@z, @plain);
push @z, main::dashboard(port => $port, deflate => 1) for 1 .. 8;
push @plain, main::dashboard(port => $port) for 1 .. 8;

ok main::publish($port, @data), 'published ' . scalar @data;

my ($want, $wz) = main::deliveries($plain[0], scalar @data);
is $wz, 0, 'plain dashboard 1: nothing compressed';

my $i = 1;

for my $c (@plain[1 .. $#plain]) {
    $i++;
    my ($d, $zc) = main::deliveries($c, scalar @data);
    is $d, $want, "plain dashboard $i: the same messages";
    is $zc, 0, "plain dashboard $i: nothing compressed";
}

$i = 0;

for my $c (@z) {
    $i++;
    my ($d, $zc) = main::deliveries($c, scalar @data);
    is $d, $want, "deflate dashboard $i: the same messages";
    is $zc, scalar @data, "deflate dashboard $i: every message compressed";
}

for my $p (@py) {
    my ($pid, $fh) = @$p;
    my @after = <$fh>;
    close $fh;
    chomp @after;

    is $?, 0, 'python: ran to the end' or diag join "\n", @after;
    my @d = grep { /^digest/ } @after;
    ok @d >= 3 && !grep({ $_ ne 'digest ' . scalar(@data) . " $want" } @d),
       'python: ' . scalar(@d) . ' clients got the same messages';
}

# one compressed twin per worker and message, whatever the subscribers

my %built;

for (split /\n/, error_log_text()) {
    $built{$1}++ if /\[debug\] (\d+)#\d+: .*hookstream deflate: \d+ bytes to/;
}

is scalar keys %built, 2, 'twins built in both workers';

for my $pid (sort keys %built) {
    is $built{$pid}, scalar @data,
       "worker $pid: one twin per message, for all its deflate subscribers";
}

$_->disconnect for @z, @plain;
--- no_error_log
[error]
[warn]
