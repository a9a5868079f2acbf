# hookstream_status: JSON by default, Prometheus text on request, and
# counters that move by the right amounts as traffic goes through.

use Test::Hookstream;
use Test::Hookstream::WS qw(:opcodes);

my $ORG = 'org_' . random_hex(32);
my $SRC = 'src_' . random_hex(32);
my $KEY = make_api_key('live');

$ENV{TEST_NGINX_DIRJSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

use vars qw($org $src $key);
($org, $src, $key) = ($ORG, $SRC, $KEY);

sub status {
    my $r = http_request('GET', '/internal/status');
    return $r->json;
}

$main::status = \&status;

workers(2);
run_tests();

__DATA__

=== TEST 1: counters follow connections, handshakes, events and messages
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
hookstream_journal $TEST_NGINX_SERVER_ROOT/journal fsync=on;
--- config
location = /v1/ws { hookstream_stream; hookstream_heartbeat 1s 1s; }
location /v1/ws/source/ { hookstream_source; }
location = /internal/publish { hookstream_publish; }
location = /internal/status { hookstream_status; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
my $s0 = $main::status->();
ok $s0, "status answers JSON";
is $s0->{connections}{stream}, 0, "no dashboards yet";
is $s0->{handshakes}{upgraded}, 0, "no upgrades yet";

my @d = map { ws_connect("/v1/ws?token=$main::key") } 1 .. 3;
my $bad = ws_connect("/v1/ws?token=hs_live_" . ('0' x 64));
my $nov = ws_connect("/v1/ws?token=$main::key", version => 8);
my $src = ws_connect("/v1/ws/source/$main::src?token=$main::key");

$d[$_]->recv_json for 0 .. 2;

my $s1 = $main::status->();
is $s1->{connections}{stream}, 3, "3 dashboards";
is $s1->{connections}{source}, 1, "1 source";
is eval { my $n = 0; $n += $_ for @{ $s1->{connections}{by_worker} }; $n }, 4,
   "by worker adds up to 4";
is $s1->{handshakes}{upgraded}, 4, "4 upgraded";
is $s1->{handshakes}{unauthorized}, 1, "1 unauthorized";
is $s1->{handshakes}{bad_request}, 1, "1 bad handshake";

$src->send_text(qq({"type":"e","idempotency_key":"k1","n":$_})) for 1 .. 2;
$src->send_text(qq({"type":"e","n":$_})) for 3 .. 5;
$src->recv_json for 1 .. 5;

my $body = join '', map {
    qq({"org_id":"$main::org","type":"delivery","channel":"deliveries","data":{"n":$_}}\n)
} 1 .. 10;
http_post('/internal/publish', $body);

for my $c (@d) {
    my $n = 0;
    while (my $m = $c->recv_json(2)) {
        $n++ if $m->{type} ne 'ping';
        last if $n == 14;
    }
}

my $s2 = $main::status->();
is $s2->{events}{ingested} - $s1->{events}{ingested}, 4, "4 events ingested";
is $s2->{events}{duplicate} - $s1->{events}{duplicate}, 1, "1 duplicate";
is $s2->{journal}{records} - $s1->{journal}{records}, 4, "4 journal records";
ok $s2->{journal}{fsyncs} > $s1->{journal}{fsyncs}, "fsyncs counted";
is $s2->{journal}{fsync_seconds}{'+Inf'}, $s2->{journal}{fsyncs},
   "the histogram counts every fsync";
is $s2->{messages}{published} - $s1->{messages}{published}, 14,
   "14 published (10 + 4 events)";
is $s2->{messages}{out} - $s1->{messages}{out}, 42, "42 queued (14 x 3)";
is $s2->{messages}{in} - $s1->{messages}{in}, 5, "5 client messages";
ok $s2->{zone}{bytes} > 0 && $s2->{zone}{bytes_free} < $s2->{zone}{bytes},
   "zone bytes";

# a silent dashboard misses its heartbeat
my ($code) = $d[0]->recv_close(5);
is $code, 4000, "heartbeat close";
$d[$_]->close for 1 .. 2;
$src->close;
sleep 0.5;

my $s3 = $main::status->();
ok $s3->{closes}{heartbeat} >= 1, "heartbeat closes counted";
is $s3->{connections}{stream} + $s3->{connections}{source}, 0,
   "connections given back";
--- error_log
client missed its heartbeat



=== TEST 2: Prometheus text exposition
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/dir.json;
--- config
location = /internal/status { hookstream_status; }
--- user_files eval
">>> dir.json\n$ENV{TEST_NGINX_DIRJSON}"
--- ws
for my $how ([ '?format=prometheus' ],
             [ '', headers => [['Accept', 'text/plain; version=0.0.4']] ])
{
    my ($q, @o) = @$how;
    my $r = http_request('GET', "/internal/status$q", @o);
    is $r->status, 200, "200 ($q)";
    like $r->header('Content-Type'), qr{^text/plain; version=0\.0\.4},
         "content type";

    my $text = $r->body;
    my (%type, $ok);
    $ok = 1;

    for my $line (split /\n/, $text) {
        if ($line =~ /^# TYPE (\w+) (counter|gauge|histogram)$/) {
            $type{$1} = $2;
        } elsif ($line =~ /^# HELP \w+ \S/) {
        } elsif ($line =~ /^(\w+?)(?:_bucket|_sum|_count)?(?:\{(\w+="[^"]*"(?:,\w+="[^"]*")*)\})? (-?[0-9.]+(?:e[+-]?\d+)?|\+Inf)$/) {
            my $name = $1;
            my $base = $name;
            if (!$type{$name}) {
                ($base = $line) =~ s/^(\w+)_(?:bucket|sum|count).*/$1/;
            }
            if (!$type{$name} && !$type{$base}) {
                $ok = 0;
                diag "no TYPE before: $line";
            }
        } else {
            $ok = 0;
            diag "not exposition format: $line";
        }
    }

    ok $ok, "every line is valid exposition format";
    like $text, qr/^hookstream_connections\{endpoint="stream"\} 0$/m,
         "a gauge";
    like $text, qr/^hookstream_journal_fsync_seconds_bucket\{le="\+Inf"\} 0$/m,
         "the histogram";
    like $text, qr/^hookstream_handshakes_total\{outcome="upgraded"\} 0$/m,
         "a counter";
}
