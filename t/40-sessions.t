# Test sessions (docs/sessions.md): creating one, its live stream of whole
# requests, webhooks of any method, the request limit and the creation
# limit per address, expiry, DELETE closing streams with 1000 "session
# ended", the 404s, the buffered events of GET, nothing in the journal,
# and sessions kept across a reload.

use Test::Hookstream;

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('live');

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

our $src = $SRC;


# POST /v1/test/sessions; dies unless a session was made
sub create_session {
    my (%o) = @_;

    my $r = http_post('/v1/test/sessions', '', %o);

    die 'create: ' . $r->dump if ($r->status // 0) != 201 || !$r->json;

    return $r->json;
}


# the test stream of a session, optionally resumed from a cursor
sub test_stream {
    my ($id, $cursor) = @_;

    my $uri = "/v1/ws/test/$id";
    $uri .= "?cursor=$cursor" if defined $cursor;

    return ws_connect($uri, timeout => 10);
}


# the path of a session's ingest URL
sub ingest_path {
    my ($s) = @_;

    (my $path = $s->{url}) =~ s{^https?://[^/]+}{};

    return $path;
}


sub next_event {
    my ($c, $t) = @_;

    my $m = $c->recv_json_until(sub { $_[0]{type} eq 'event' }, $t // 5);

    return $m;
}


workers(2);
run_tests();

__DATA__

=== TEST 1: create, stream, three webhooks of different methods arrive in order
--- http_config
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- tls
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $scheme = is_tls() ? 'https' : 'http';

json_ok $s, {
    session_id    => qr/^[0-9a-f]{32}$/,
    url           => "$scheme://localhost/v1/ingest/$id",
    created_at    => qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    expires_at    => qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    request_limit => 2000,
    request_count => 0,
}, "the session";

# 14 days by default
my ($y, $mo, $d) = $s->{expires_at} =~ /^(\d+)-(\d+)-(\d+)/;
my @t = gmtime(time + 14 * 86400);
is sprintf('%04d-%02d-%02d', $y, $mo, $d),
   sprintf('%04d-%02d-%02d', $t[5] + 1900, $t[4] + 1, $t[3]),
   "expires in 14 days";

my $c = test_stream($id);
ok $c->upgraded, "the test stream upgraded" or diag $c->status, $c->body;

my $path = ingest_path($s);

my $r = http_request('POST', "$path?x=1&y=two",
                     body => '{"type":"order.paid","n":18446744073709551615}',
                     headers => { 'Content-Type' => 'application/json',
                                  'X-Signature' => 'sig-1' });
is $r->status, 200, "POST accepted";
json_ok $r->json, { event_id => qr/^evt_[0-9a-f]{32}$/, source_id => $id },
        "POST answer";
ok !exists $r->json->{durable}, "no durable:false for a test session";

$r = http_request('PUT', $path, body => 'plain text body',
                  headers => { 'Content-Type' => 'text/plain' });
is $r->status, 200, "PUT accepted";

$r = http_request('DELETE', "$path?gone=yes");
is $r->status, 200, "DELETE without a body accepted";

my $e1 = next_event($c);
my $raw = $c->last_text;
my $e2 = next_event($c);
my $e3 = next_event($c);

json_ok $e1, {
    type    => 'event',
    channel => 'test',
    cursor  => qr/^[0-9a-f]+-\d+$/,
    data    => {
        id           => qr/^evt_[0-9a-f]{32}$/,
        source_id    => $id,
        method       => 'POST',
        status       => 'received',
        type         => 'order.paid',
        received_at  => qr/Z$/,
        path         => "/v1/ingest/$id",
        query        => 'x=1&y=two',
        content_type => 'application/json',
        source_ip    => '127.0.0.1',
        headers      => { 'X-Signature' => 'sig-1' },
    },
}, "first: the whole POST";
like $raw, qr/"body":\{"type":"order.paid","n":18446744073709551615\}/,
     "the body byte for byte";

json_ok $e2, { data => { method => 'PUT', body => 'plain text body',
                         content_type => 'text/plain' } },
        "second: the PUT, a text body as a string";
json_ok $e3, { data => { method => 'DELETE', query => 'gone=yes',
                         body => undef } },
        "third: the DELETE, no body";

ok !defined $c->recv_message(0.3), "nothing else";

# test events are never written to the journal
my $journal = '';
for my $f (glob("$TEST_NGINX_DATA_DIR/journal/*")) {
    open my $fh, '<', $f or next;
    local $/;
    $journal .= <$fh> // '';
}
unlike $journal, qr/$id/, "the journal holds nothing of the session";
--- no_error_log
[error]
[warn]



=== TEST 2: GET returns the session with its buffered events, newest last
--- config
location /v1/test/sessions/ { hookstream_test_sessions; }
location = /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $path = ingest_path($s);

my $r = http_get("/v1/test/sessions/$id");
is $r->status, 200, "GET a new session";
json_ok $r->json, { session_id => $id, request_count => 0, events => [] },
        "no events yet";

for my $n (1 .. 4) {
    $r = http_post($path, qq({"n":$n}));
    is $r->status, 200, "webhook $n";
}

$r = http_get("/v1/test/sessions/$id/");
is $r->status, 200, "GET with a trailing slash";
my $j = $r->json;
json_ok $j, {
    session_id    => $id,
    url           => "http://localhost/v1/ingest/$id",
    request_limit => 2000,
    request_count => 4,
    cursor        => qr/^[0-9a-f]+-\d+$/,
    events        => [ map { { method => 'POST', body => { n => $_ },
                               id => qr/^evt_/ } } 1 .. 4 ],
}, "four events, oldest first";
like $r->body, qr/\{"n":1\}.*\{"n":2\}.*\{"n":3\}.*\{"n":4\}/s,
     "bodies as sent, in order";

$r = http_request('HEAD', "/v1/test/sessions/$id");
is $r->status, 200, "HEAD";
is $r->body, '', "HEAD: no body";

# the cursor of the GET: a stream from it goes on with no gap
my $c = test_stream($id, $j->{cursor});
ok $c->upgraded, "stream from the GET's cursor";
ok !defined $c->recv_message(0.3), "nothing replayed";
http_post($path, '{"n":5}');
my $e = next_event($c);
json_ok $e, { data => { body => { n => 5 } } }, "then the fifth, live";

# and from the cursor before the first event: all five
my ($ep, $seq) = $j->{cursor} =~ /^([0-9a-f]+)-(\d+)$/;
my $c2 = test_stream($id, "$ep-" . ($seq - 4));
my @got = map { next_event($c2)->{data}{body}{n} } 1 .. 5;
is "@got", "1 2 3 4 5", "replay from the start";
--- no_error_log
[error]
[warn]



=== TEST 3: the request limit: 429 with Retry-After past it
--- config
hookstream_test_session_limits 3 10;
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $path = ingest_path($s);

is $s->{request_limit}, 3, "the limit is in the answer";

for my $n (1 .. 3) {
    is http_post($path, qq({"n":$n}))->status, 200, "request $n accepted";
}

for my $n (4 .. 5) {
    my $r = http_post($path, qq({"n":$n}));
    is $r->status, 429, "request $n: 429";
    json_ok $r->json, { status => 429, error => qr/limit/,
                        request_id => qr/^req_[0-9a-f]{32}$/ },
            "request $n: the JSON error";
    my $ra = $r->header('Retry-After') // '';
    ok $ra =~ /^\d+$/ && $ra > 13 * 86400 && $ra <= 14 * 86400,
       "request $n: Retry-After until the session expires" or diag $ra;
}

my $r = http_get("/v1/test/sessions/$s->{session_id}");
is $r->json->{request_count}, 3, "refused requests are not counted";
is scalar @{ $r->json->{events} }, 3, "three events";
--- error_log
reached its request limit
--- no_error_log
[error]
[warn]



=== TEST 4: creation is limited per client address: 429 with Retry-After
--- config
hookstream_test_session_limits 100 3;
location /v1/test/sessions { hookstream_test_sessions; }
location /other/sessions {
    hookstream_test_sessions;
    hookstream_test_session_limits 100 0;
}
--- ws
for my $n (1 .. 3) {
    my $r = http_post('/v1/test/sessions', '');
    is $r->status, 201, "session $n created";
}

for my $n (4 .. 5) {
    my $r = http_post('/v1/test/sessions', '');
    is $r->status, 429, "session $n: 429";
    json_ok $r->json, { status => 429, error => qr/Too many test sessions/ },
            "session $n: the JSON error";
    my $ra = $r->header('Retry-After') // '';
    ok $ra =~ /^\d+$/ && $ra > 3500 && $ra <= 3600,
       "session $n: Retry-After until the hour is over" or diag $ra;
}

# 0 turns the creation limit off
for my $n (1 .. 5) {
    is http_post('/other/sessions', '')->status, 201,
       "no creation limit: session $n";
}
--- error_log
client created too many test sessions
--- no_error_log
[error]
[warn]



=== TEST 5: an expired session: its stream closes, then 404 everywhere
--- config
hookstream_test_session_ttl 2s;
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $path = ingest_path($s);

my $c = test_stream($id);
ok $c->upgraded, "stream";
is http_post($path, '{"a":1}')->status, 200, "live: accepted";
ok next_event($c), "live: the event arrives";

sleep 2.3;

my $r = http_post($path, '{"a":2}');
is $r->status, 404, "expired: ingest 404";
json_ok $r->json, { status => 404, error => 'Test session not found' },
        "the JSON error";

my ($code, $reason) = $c->recv_close(5);
is $code, 1000, "the open stream is closed with 1000";
is $reason, 'session ended', "reason: session ended";

is http_get("/v1/test/sessions/$id")->status, 404, "expired: GET 404";
my $c2 = test_stream($id);
ok !$c2->upgraded, "expired: no stream";
is $c2->status, 404, "expired: stream 404";

# a session that expired without anyone looking is reaped on the way
my $s2 = create_session();
sleep 2.3;
is http_request('DELETE', "/v1/test/sessions/$s2->{session_id}")->status,
   404, "expired: DELETE 404";
--- no_error_log
[error]
[warn]



=== TEST 6: DELETE ends a session: streams close with 1000, then 404s
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $path = ingest_path($s);

# several streams, so that both workers have some
my @c = map { test_stream($id) } 1 .. 4;
ok((!grep { !$_->upgraded } @c), "four streams");

is http_post($path, '{"x":1}')->status, 200, "a webhook";
ok next_event($_), "each stream has it" for @c;

my $r = http_request('DELETE', "/v1/test/sessions/$id");
is $r->status, 204, "DELETE: 204";

for my $i (0 .. $#c) {
    my ($code, $reason, $closed) = $c[$i]->recv_close(5);
    is $code, 1000, "stream $i: close 1000";
    is $reason, 'session ended', "stream $i: session ended";
    ok $closed, "stream $i: TCP closed";
}

is http_get("/v1/test/sessions/$id")->status, 404, "then GET 404";
is http_post($path, '{"x":2}')->status, 404, "then ingest 404";
my $c = test_stream($id);
is $c->status, 404, "then the stream 404";
is http_request('DELETE', "/v1/test/sessions/$id")->status, 404,
   "DELETE again: 404";
--- no_error_log
[error]
[warn]



=== TEST 7: 404 for ids that are not live sessions, 405 and 400
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- user_files eval
">>> directory.json\n$ENV{TEST_NGINX_DIRECTORY_JSON}"
--- ws
my $unknown = random_hex(32);

for my $id ($unknown, 'nothex' . ('0' x 26), uc random_hex(32), 'abc',
            $main::src)
{
    my $r = http_get("/v1/test/sessions/$id");
    is $r->status, 404, "GET $id: 404";
    json_ok $r->json, { status => 404, error => 'Test session not found',
                        request_id => qr/^req_/ }, "GET $id: JSON error";

    my $c = test_stream($id);
    ok !$c->upgraded, "stream $id: no upgrade";
    is $c->status, 404, "stream $id: 404";
    json_ok $c->json, { status => 404 }, "stream $id: JSON error";
}

# a source is a source, not a test session
my $r = http_post("/v1/ingest/$main::src", '{"a":1}');
is $r->status, 200, "a src_ id still ingests as a source";
$r = http_post("/v1/ingest/$unknown", '{"a":1}');
is $r->status, 404, "an unknown session: ingest 404";
is $r->json->{error}, 'Test session not found', "ingest: the error";

# the handshake is checked before the id
$r = http_get("/v1/ws/test/$unknown");
is $r->status, 400, "a plain GET on the test stream: 400";

$r = http_get('/v1/test/sessions');
is $r->status, 405, "GET the collection: 405";
is $r->header('Allow'), 'POST', "Allow: POST";
$r = http_request('PUT', "/v1/test/sessions/$unknown", body => '{}');
is $r->status, 405, "PUT a session: 405";
is $r->header('Allow'), 'GET, HEAD, DELETE', "Allow: GET, HEAD, DELETE";
--- no_error_log
[error]
[warn]



=== TEST 8: sessions and their buffered events survive a reload
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $path = ingest_path($s);

my $c = test_stream($id);
is http_post($path, '{"n":1}')->status, 200, "before the reload";
my $e = next_event($c);
ok $e, "event 1 live";

ok reload_nginx(), "reloaded";

my ($code) = $c->recv_close(5);
is $code, 1001, "the stream is closed with 1001 going away";

is http_post($path, '{"n":2}')->status, 200, "after the reload: ingest";

my $r = http_get("/v1/test/sessions/$id");
is $r->status, 200, "after the reload: GET";
json_ok $r->json, { request_count => 2,
                    events => [ { body => { n => 1 } },
                                { body => { n => 2 } } ] },
        "both events buffered";

# resumed from the last cursor seen: the one missed while away
my $c2 = test_stream($id, $e->{cursor});
ok $c2->upgraded, "reconnected with the cursor";
json_ok next_event($c2), { data => { body => { n => 2 } } },
        "the missed event replayed";
--- no_error_log
[error]



=== TEST 9: hookstream_test_session_url; an id from a variable
--- config
hookstream_test_session_url https://hooks.example.com/in;
location /v1/test/sessions { hookstream_test_sessions; }
location ~ ^/t/([0-9a-f]+)/stream$ { hookstream_test_stream $1; }
location ~ ^/s(?:/(?<sid>[^/]+))?$ { hookstream_test_sessions $sid; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
is $s->{url}, "https://hooks.example.com/in/$id", "the configured URL";

my $c = ws_connect("/t/$id/stream");
ok $c->upgraded, "a test stream with the id from a variable";

is http_post("/v1/ingest/$id", '{"v":1}')->status, 200, "webhook";
json_ok next_event($c), { data => { body => { v => 1 } } }, "arrives";

my $r = http_get("/s/$id");
is $r->status, 200, "GET through a variable";
is $r->json->{session_id}, $id, "the session";

$r = http_post('/s', '');
is $r->status, 201, "POST with the variable empty creates";
--- no_error_log
[error]
[warn]



=== TEST 10: GET after the broker evicted older events; stream limit
--- config
hookstream_buffer 3 1h;
hookstream_max_connections_per_org 2;
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $s = create_session();
my $id = $s->{session_id};
my $path = ingest_path($s);

for my $n (1 .. 7) {
    is http_post($path, qq({"n":$n}))->status, 200, "webhook $n";
}

my $r = http_get("/v1/test/sessions/$id");
is $r->status, 200, "GET";
json_ok $r->json, { request_count => 7,
                    events => [ map { { body => { n => $_ } } } 5 .. 7 ] },
        "the three still buffered";

my @c = map { test_stream($id) } 1 .. 2;
ok $c[0]->upgraded && $c[1]->upgraded, "two streams";
my $c = test_stream($id);
is $c->status, 429, "a third stream: 429";
json_ok $c->json, { status => 429 }, "the JSON error";

$c[0]->close;
ok wait_until(sub {
    my $t = test_stream($id);
    return $t->upgraded ? 1 : 0;
}, 5, 0.1), "a stream again once one closed";
--- no_error_log
[error]
[warn]



=== TEST 11: a TTL of 0 is refused
--- config
hookstream_test_session_ttl 0;
location /v1/test/sessions { hookstream_test_sessions; }
--- must_die
--- error_log
"hookstream_test_session_ttl" directive must be at least 1 second



=== TEST 12: a request limit of 0 is refused
--- config
hookstream_test_session_limits 0 10;
location /v1/test/sessions { hookstream_test_sessions; }
--- must_die
--- error_log
invalid request limit "0"



=== TEST 13: a creation limit that is not a number is refused
--- config
hookstream_test_session_limits 10 many;
location /v1/test/sessions { hookstream_test_sessions; }
--- must_die
--- error_log
invalid creation limit "many"
