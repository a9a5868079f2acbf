# The inspector page (examples/inspector/) end to end in headless Chromium,
# driven by playwright-core: create a session, see webhooks appear, lose
# the stream to a reload and see the page resume from its cursor.  Then the
# test stream from Node's ws package, written the way the docs show it.
#
# Needs /usr/bin/chromium (Debian package "chromium") and t/node's
# node_modules ("make deps").

use Test::Hookstream;

use IO::Select;
use IPC::Open2 ();
use Time::HiRes ();

my $NODE_DIR = repo_root() . '/t/node';

if (!-x '/usr/bin/chromium') {
    Test::More::plan(skip_all => 'no /usr/bin/chromium (apt-get install '
                                 . 'chromium)');
}

if (!-d "$NODE_DIR/node_modules/playwright-core"
    || !-d "$NODE_DIR/node_modules/ws")
{
    Test::More::plan(skip_all => 'no node_modules in t/node (make deps)');
}


# a node script with its stdin and stdout on pipes
sub spawn_node {
    my ($script, @args) = @_;

    my ($out, $in);
    my $pid = IPC::Open2::open2($out, $in, 'node', "$NODE_DIR/$script",
                                @args);
    $in->autoflush(1);

    return { pid => $pid, out => $out, in => $in, buf => '',
             sel => IO::Select->new($out), seen => [] };
}


# the next line the script prints that matches, or undef after $timeout
sub expect_line {
    my ($p, $re, $timeout) = @_;

    my $end = Time::HiRes::time() + $timeout;

    for (;;) {
        while ($p->{buf} =~ s/^([^\n]*)\n//) {
            my $line = $1;
            push @{ $p->{seen} }, $line;
            return $line if $line =~ $re || $line =~ /^error /;
        }

        my $left = $end - Time::HiRes::time();
        return undef if $left <= 0 || !$p->{sel}->can_read($left);

        my $n = sysread($p->{out}, $p->{buf}, 65536, length $p->{buf});
        return undef if !$n;
    }
}


sub tell_node {
    my ($p, $line) = @_;

    print { $p->{in} } "$line\n";
}


sub end_node {
    my ($p) = @_;

    close $p->{in};

    my $end = Time::HiRes::time() + 20;

    while (Time::HiRes::time() < $end) {
        return $? >> 8 if waitpid($p->{pid}, 1) == $p->{pid};    # WNOHANG
        Time::HiRes::sleep(0.1);
    }

    kill 'KILL', $p->{pid};
    waitpid($p->{pid}, 0);

    return -1;
}


workers(2);
run_tests();

__DATA__

=== TEST 1: the inspector lists requests live and resumes after a reload
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
location /inspector/ {
    alias $TEST_NGINX_REPO_ROOT/examples/inspector/;
    types {
        text/html               html;
        application/javascript  js;
        text/css                css;
    }
}
--- ws
my $port = server_port();
my $shot = servroot() . '/inspector.png';
my $profile = servroot() . '/chromium-profile';

unlink $shot;

my $p = spawn_node('inspector-e2e.js', "http://127.0.0.1:$port", $shot,
                   $profile);

my $line = expect_line($p, qr/^session /, 90) // '';
like $line, qr{^session http://127\.0\.0\.1:$port/v1/ingest/[0-9a-f]{32}$},
     "the page made a session and shows its URL"
    or diag join "\n", @{ $p->{seen} };

my ($url) = $line =~ /^session (\S+)/;
(my $path = $url // '') =~ s{^https?://[^/]+}{};

my $r = http_post($path, '{"order":1,"total":18446744073709551615}',
                  headers => { 'Content-Type' => 'application/json' });
is $r->status, 200, "webhook 1";
$r = http_request('PUT', "$path?attempt=2", body => 'hello inspector',
                  headers => { 'Content-Type' => 'text/plain' });
is $r->status, 200, "webhook 2";

tell_node($p, 'posted 2');

$line = expect_line($p, qr/^rows /, 30) // '';
my ($json) = $line =~ /^rows (.*)/;
my $rows = $json ? decode_json($json) : [];

is scalar @$rows, 2, "two rows" or diag $line;
is $rows->[0]{method}, 'PUT', "newest first: the PUT";
like $rows->[0]{path}, qr/\?attempt=2$/, "its path and query";
is $rows->[0]{body}, 'hello inspector', "a text body as text";
ok $rows->[0]{headers} >= 2, "its headers";
is $rows->[1]{method}, 'POST', "then the POST";
like $rows->[1]{body}, qr/"total": 18446744073709551615/,
     "the JSON body pretty-printed, its number intact";
like $rows->[1]{body}, qr/^\{\n  "order": 1,/, "indented";
like $rows->[1]{time}, qr/\d/, "a time";

# the reload closes the stream with 1001; the page reconnects with its
# cursor and gets what was sent while it was away
ok reload_nginx(), "reloaded";

$r = http_post($path, '{"order":3}');
is $r->status, 200, "webhook 3, right after the reload";

tell_node($p, 'posted 3');

$line = expect_line($p, qr/^rows /, 30) // '';
($json) = $line =~ /^rows (.*)/;
$rows = $json ? decode_json($json) : [];

is scalar @$rows, 3, "three rows" or diag $line;
like $rows->[0]{body}, qr/"order": 3/, "the third on top";
my %ids = map { $_->{id} => 1 } @$rows;
is scalar keys %ids, 3, "no duplicates";

$line = expect_line($p, qr/^sockets /, 30) // '';
my ($sockets) = $line =~ /^sockets (\d+)/;
ok $sockets && $sockets >= 2, "the page opened a second socket"
    or diag $line;

$line = expect_line($p, qr/^status /, 30) // '';
is $line, 'status live', "and is live again";

$line = expect_line($p, qr/^done$/, 30) // '';
is $line, 'done', "finished" or diag join "\n", @{ $p->{seen} };

is end_node($p), 0, "the browser script exited cleanly";
ok -s $shot, "a screenshot at $shot";
ok !grep({ /^pageerror/ } @{ $p->{seen} }), "no JavaScript errors"
    or diag join "\n", @{ $p->{seen} };
--- no_error_log
[error]



=== TEST 2: the docs' client: Node's ws package on the test stream
--- config
location /v1/test/sessions { hookstream_test_sessions; }
location /v1/ws/test/ { hookstream_test_stream; }
location /v1/ingest/ { hookstream_ingest; }
--- ws
my $r = http_post('/v1/test/sessions', '');
is $r->status, 201, "a session";
my $id = $r->json->{session_id};

my $p = spawn_node('test-stream-client.js', server_port(), $id);

my $line = expect_line($p, qr/^open$/, 20) // '';
is $line, 'open', "the client connected";

$r = http_post("/v1/ingest/$id?from=node", '{"hello":"node"}',
               headers => { 'Content-Type' => 'application/json' });
is $r->status, 200, "a webhook";

$line = expect_line($p, qr/^\{/, 20) // '';
my $m = $line =~ /^\{/ ? decode_json($line) : undef;
json_ok $m, { channel => 'test',
              data => { method => 'POST', query => 'from=node',
                        body => { hello => 'node' },
                        content_type => 'application/json' } },
        "the event, as msg.type === \"event\""
    or diag join "\n", @{ $p->{seen} };

# ws.close() sends an empty close frame: the server echoes it (1005)
$line = expect_line($p, qr/^close /, 20) // '';
like $line, qr/^close (1000|1005)$/, "closed by the client";

is end_node($p), 0, "exited cleanly";
--- no_error_log
[error]
[warn]
