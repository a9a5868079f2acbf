# The dashboard page (examples/dashboard/) end to end in headless Chromium,
# driven by playwright-core, with the demo sign-in of examples/nginx.conf:
# signed in, events, deliveries and issues appear live in their columns
# and the page resumes from its cursor after a reload; not signed in, the
# page shows the 401; served from a foreign origin, the stream refuses the
# cookie with 403 and the page shows it, until the origin is allowed.
#
# The locations under test are taken from examples/nginx.conf itself, so
# the example configuration is what is tested.  Screenshots go to the
# scratch directory (dashboard-*.png; HOOKSTREAM_KEEP=1 keeps it).
#
# Needs /usr/bin/chromium (Debian package "chromium") and t/node's
# node_modules ("make deps").

use Test::Hookstream;

use IO::Select;
use IPC::Open2 ();
use Time::HiRes ();

use vars qw($SESSION $ORG $SOURCE);

my $NODE_DIR = repo_root() . '/t/node';
my $EXAMPLES = repo_root() . '/examples';

if (!-x '/usr/bin/chromium') {
    Test::More::plan(skip_all => 'no /usr/bin/chromium (apt-get install '
                                 . 'chromium)');
}

if (!-d "$NODE_DIR/node_modules/playwright-core") {
    Test::More::plan(skip_all => 'no node_modules in t/node (make deps)');
}

# the page's own server, and a second one: a foreign origin
$ENV{TEST_NGINX_PORT2} = free_port();


sub slurp {
    my ($path) = @_;

    open my $fh, '<', $path or die "open $path: $!\n";
    local $/;
    my $text = <$fh>;
    close $fh;

    return $text;
}


# the demo org: its session token, its id and a source of it
$SESSION = slurp("$EXAMPLES/demo-session.txt");
$SESSION =~ s/\s+//g;

{
    my $dir = decode_json(slurp("$EXAMPLES/directory.json"));
    ($ORG) = keys %{ $dir->{orgs} };
    $SOURCE = $dir->{orgs}{$ORG}{sources}[0];
}


# a block of examples/nginx.conf, from $start to its closing brace, with
# the placeholders run.sh fills in filled in
sub example_block {
    my ($start) = @_;

    my $conf = slurp("$EXAMPLES/nginx.conf");
    $conf =~ s/\@EXAMPLES\@/$EXAMPLES/g;
    $conf =~ s/\@SESSION\@/$SESSION/g;

    my $at = index $conf, $start;
    die "no \"$start\" in examples/nginx.conf\n" if $at < 0;

    my ($depth, $quote) = (0, '');

    for (my $i = $at; $i < length $conf; $i++) {
        my $c = substr $conf, $i, 1;

        if ($quote) {
            if ($c eq '\\') {
                $i++;
            } elsif ($c eq $quote) {
                $quote = '';
            }
            next;
        }

        if ($c eq '"' || $c eq "'") {
            $quote = $c;

        } elsif ($c eq '#') {
            my $nl = index $conf, "\n", $i;
            $i = $nl < 0 ? length $conf : $nl;

        } elsif ($c eq '{') {
            $depth++;

        } elsif ($c eq '}' && --$depth == 0) {
            return substr($conf, $at, $i - $at + 1) . "\n";
        }
    }

    die "\"$start\" does not end in examples/nginx.conf\n";
}


# the page and the demo sign-in, as examples/nginx.conf serves them
sub example_locations {
    return join '', map { example_block($_) }
        'location /dashboard/', 'location = /demo/sign-in',
        'location = /demo/sign-out', 'location = /demo/session';
}


# the http{} part: the directory, the cookie map, and the foreign server,
# which serves the same page and session check but points the page at the
# stream of the first server through its config.js
sub http_config {
    my $port = server_port();
    my $port2 = $ENV{TEST_NGINX_PORT2};

    return "hookstream_directory $EXAMPLES/directory.json;\n"
        . example_block('map $http_cookie')
        . "server {\n"
        . "    listen 127.0.0.1:$port2;\n"
        . example_block('location /dashboard/')
        . example_block('location = /demo/session')
        . "    location = /dashboard/config.js {\n"
        . "        default_type application/javascript;\n"
        . "        return 200 'window.hookstreamDashboard = {"
        .              "stream: \"ws://127.0.0.1:$port/v1/ws\", "
        .              "session: \"/demo/session\"};';\n"
        . "    }\n"
        . "}\n";
}


sub server_config {
    my (@extra) = @_;

    return join('', @extra)
        . "location = /v1/ws { hookstream_stream; }\n"
        . "location /v1/ingest/ { hookstream_ingest; }\n"
        . "location = /internal/publish { hookstream_publish; }\n"
        . example_locations();
}


# browsers a snippet left behind (it died or ran out of time)
my %NODES;

sub reap_nodes {
    for my $pid (keys %NODES) {
        kill 'TERM', $pid;

        for (1 .. 50) {
            last if waitpid($pid, 1) == $pid;                   # WNOHANG
            Time::HiRes::sleep(0.1);
        }

        if (kill 0, $pid) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
        }

        delete $NODES{$pid};
    }
}

END { reap_nodes() }


# a node script with its stdin and stdout on pipes
sub spawn_node {
    my ($script, @args) = @_;

    reap_nodes();

    my ($out, $in);
    my $pid = IPC::Open2::open2($out, $in, 'node', "$NODE_DIR/$script",
                                @args);
    $in->autoflush(1);
    $NODES{$pid} = 1;

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


sub end_node {
    my ($p) = @_;

    print { $p->{in} } "quit\n";
    close $p->{in};

    my $end = Time::HiRes::time() + 20;

    while (Time::HiRes::time() < $end) {
        if (waitpid($p->{pid}, 1) == $p->{pid}) {                 # WNOHANG
            delete $NODES{ $p->{pid} };
            return $? >> 8;
        }
        Time::HiRes::sleep(0.1);
    }

    reap_nodes();

    return -1;
}


# a browser with a profile of its own (no cookie yet)
sub browser {
    my ($name) = @_;

    my $p = spawn_node('dashboard-e2e.js', servroot() . "/profile-$name");
    my $line = expect_line($p, qr/^ready$/, 60) // '';

    is $line, 'ready', "the browser started" or diag $line;

    return $p;
}


# one command of dashboard-e2e.js: its result, or undef (and a diag)
sub browse {
    my ($p, $cmd, $timeout) = @_;

    my ($verb) = $cmd =~ /^(\S+)/;

    print { $p->{in} } "$cmd\n";

    my $line = expect_line($p, qr/^ok \Q$verb\E(?: |$)/, $timeout // 40);

    if (!defined $line || $line =~ /^error /) {
        diag "browser: $cmd: " . ($line // 'no answer');
        return undef;
    }

    $line =~ s/^ok \S+ ?//;

    return $line;
}


sub browse_json {
    my $r = browse(@_);

    return defined $r ? decode_json($r) : {};
}


sub publish {
    my (@msgs) = @_;

    my $body = join '', map {
        ref $_ ? encode_json({ org_id => $ORG, %$_ }) . "\n" : $_
    } @msgs;

    my $r = http_post('/internal/publish', $body);

    return ($r->status // 0) == 200 && $r->json
           && $r->json->{published} == @msgs;
}


sub ws_log_lines {
    return grep { m{"GET /v1/ws[ ?]} } split /\n/, access_log_text();
}


sub no_page_errors {
    my ($p) = @_;

    ok !grep({ /^pageerror/ } @{ $p->{seen} }), "no JavaScript errors"
        or diag join "\n", @{ $p->{seen} };
}


workers(2);
run_tests();

__DATA__

=== TEST 1: signed in: events, deliveries and issues appear live, resumed after a reload
--- http_config eval
http_config()
--- config eval
server_config()
--- ws
my $base = 'http://127.0.0.1:' . server_port();
my $p = browser('live');

like browse($p, "goto $base/demo/sign-in") // '', qr{^\Q$base\E/dashboard/$},
     "the demo sign-in redirects to the dashboard";
is browse($p, 'state live'), 'live', "signed in: the stream is live";

my $info = browse_json($p, 'info');
is $info->{org}, $main::ORG, "the page shows the org of the welcome";
ok $info->{signOut} && !$info->{signIn}, "a sign-out link, no sign-in";

is_deeply [grep { /^websocket / } @{ $p->{seen} }],
          ['websocket ws://127.0.0.1:' . server_port() . '/v1/ws'],
          "one socket, no key in its URL: the cookie did it";

ok publish({ type => 'delivery', channel => 'deliveries:dst_1',
             data => { id => 'dlv_1', status => 'success',
                       event_type => 'order.paid',
                       destination_id => 'dst_1' } },
           { type => 'issue', channel => 'issues',
             data => { id => 'iss_1', title => 'Destination failing',
                       status => 'open' } }),
   "published a delivery and an issue";

my $r = http_post("/v1/ingest/$main::SOURCE",
                  '{"type":"order.paid","data":{"id":42}}',
                  headers => { 'Content-Type' => 'application/json' });
is $r->status, 200, "posted a webhook";

browse($p, 'items events 1');
browse($p, 'items deliveries 1');
my $cols = browse_json($p, 'items issues 1');

is scalar @{ $cols->{events} || [] }, 1, "one event";
is scalar @{ $cols->{deliveries} || [] }, 1, "one delivery";
is scalar @{ $cols->{issues} || [] }, 1, "one issue";

my ($e, $d, $i) = map { $cols->{$_}[0] || {} } qw(events deliveries issues);

is $e->{type}, 'event', "the event in the events column";
is $e->{title}, 'order.paid', "titled by its type";
is $e->{channel}, 'events', "on channel events";
like $e->{id} // '', qr/^evt_[0-9a-f]{32}$/, "with its event id";
like $e->{data}, qr/"source_id":"\Q$main::SOURCE\E"/, "and its source";

is $d->{type}, 'delivery', "the delivery in the deliveries column";
is $d->{id}, 'dlv_1', "dlv_1";
is $d->{badge}, 'success', "its status";

is $i->{type}, 'issue', "the issue in the issues column";
is $i->{title}, 'Destination failing', "titled by its title";
is $i->{badge}, 'open', "its status";

# newest first, and the data as sent (a 64-bit integer intact)
ok publish(qq({"org_id":"$main::ORG","type":"delivery","channel":)
           . qq("deliveries","data":{"id":"dlv_2","status":"failed",)
           . qq("n":18446744073709551615}}\n)),
   "published a second delivery";

$cols = browse_json($p, 'items deliveries 2');
is join(',', map { $_->{id} } @{ $cols->{deliveries} || [] }), 'dlv_2,dlv_1',
   "newest first";
like $cols->{deliveries}[0]{data} // '', qr/"n":18446744073709551615\}$/,
     "the data's text as sent";

# the reload closes the stream with 1001; the page comes back with its
# cursor and gets what was published while it was away
my $cursor = browse_json($p, 'info')->{cursor} // '';
like $cursor, qr/^[0-9a-f]+-\d+$/, "the page keeps a cursor";

ok reload_nginx(), "reloaded";
ok publish({ type => 'issue', channel => 'issues',
             data => { id => 'iss_2', title => 'Published during the drop',
                       status => 'open' } }),
   "an issue right after the reload";

$cols = browse_json($p, 'items issues 2', 40);
is join(',', map { $_->{id} } @{ $cols->{issues} || [] }), 'iss_2,iss_1',
   "the issue published during the drop came";
is browse($p, 'state live'), 'live', "live again";

$info = browse_json($p, 'info');
ok $info->{sockets} >= 2, "on a new socket" or diag explain $info;

ok grep({ $_ eq 'websocket ws://127.0.0.1:' . server_port()
                . "/v1/ws?cursor=$cursor" } @{ $p->{seen} }),
   "the page resumed with ?cursor=$cursor"
    or diag join "\n", @{ $p->{seen} };

my %cursors;
$cursors{ $_->{cursor} }++ for map { @{ $cols->{$_} || [] } }
                                   qw(events deliveries issues);
is scalar(grep { $_ > 1 } values %cursors), 0, "no duplicates";

my $shot = servroot() . '/dashboard-live.png';
is browse($p, "screenshot $shot"), $shot, "a screenshot";
ok -s $shot, "at $shot";

# signing out: the next stream is refused with 401
like browse($p, 'click #sign-out') // '', qr{/dashboard/$}, "signed out";
is browse($p, 'state signed-out'), 'signed-out', "the page says so";

no_page_errors($p);
is end_node($p), 0, "the browser script exited cleanly";

# a WebSocket is logged when it ends: now that the browser is gone
ok wait_until(sub { (grep { / 101 / } ws_log_lines()) >= 2 }, 10),
   "both streams logged";

my @lines = ws_log_lines();
is scalar(grep { m{"GET /v1/ws HTTP/1\.1" 101 } } @lines), 1,
   "the first upgrade";
is scalar(grep { m{"GET /v1/ws\?cursor=\Q$cursor\E HTTP/1\.1" 101 } }
          @lines), 1,
   "the resumed one, with its cursor"
    or diag join "\n", @lines;
is scalar(grep { m{"GET /v1/ws HTTP/1\.1" 401 } } @lines), 1,
   "and after the sign-out, 401";
--- no_error_log
[error]
[warn]



=== TEST 2: not signed in: the page shows the 401, and signing in fixes it
--- http_config eval
http_config()
--- config eval
server_config()
--- ws
my $base = 'http://127.0.0.1:' . server_port();
my $p = browser('anonymous');

browse($p, "goto $base/dashboard/");
is browse($p, 'state signed-out'), 'signed-out', "the page: signed out";
like browse($p, 'notice') // '', qr/Not signed in \(401\)/,
     "it shows the 401";

my $info = browse_json($p, 'info');
ok $info->{signIn} && !$info->{signOut}, "a sign-in link";

my @lines = ws_log_lines();
is scalar @lines, 1, "one upgrade request";
like $lines[0] // '', qr{"GET /v1/ws HTTP/1\.1" 401 }, "answered 401";
like access_log_text(), qr{"GET /demo/session HTTP/1\.1" 401 },
     "the page's session check, 401 too";
my $failed = "console error WebSocket connection to 'ws://127.0.0.1:"
             . server_port() . "/v1/ws' failed";
ok grep({ index($_, $failed) == 0 } @{ $p->{seen} }),
   "the browser saw the upgrade fail"
    or diag join "\n", @{ $p->{seen} };

my $shot = servroot() . '/dashboard-signed-out.png';
is browse($p, "screenshot $shot"), $shot, "a screenshot";

# a page without a session does not hammer the stream
sleep 2;
is scalar(ws_log_lines()), 1, "no retries without a session";

like browse($p, 'click #sign-in') // '', qr{/dashboard/$},
     "the page's sign-in link";
is browse($p, 'state live'), 'live', "now live";

no_page_errors($p);
is end_node($p), 0, "the browser script exited cleanly";
--- no_error_log
[error]
[warn]



=== TEST 3: served from a foreign origin: refused with 403
--- http_config eval
http_config()
--- config eval
server_config()
--- ws
my $base = 'http://127.0.0.1:' . server_port();
my $foreign = "http://127.0.0.1:$ENV{TEST_NGINX_PORT2}";
my $p = browser('foreign');

browse($p, "goto $base/demo/sign-in");
is browse($p, 'state live'), 'live', "signed in, live on its own origin";

# the cookie is the host's, whatever the port: the foreign page sends it
browse($p, "goto $foreign/dashboard/");
is browse($p, 'state refused'), 'refused', "the foreign page: refused";

my $notice = browse($p, 'notice') // '';
like $notice, qr/hookstream_allowed_origins/, "it names the directive";
like $notice, qr/403/, "and the 403";
like $notice, qr/\Q$foreign\E/, "and its origin";
ok browse_json($p, 'info')->{retry}, "a retry button";

ok grep({ $_ eq 'websocket ws://127.0.0.1:' . server_port() . '/v1/ws' }
        @{ $p->{seen} }),
   "the foreign page opened the first server's stream";

my @lines = ws_log_lines();
ok grep({ m{"GET /v1/ws HTTP/1\.1" 403 } } @lines), "the upgrade got 403"
    or diag join "\n", @lines;
like error_log_text(),
     qr/client sent a session cookie from Origin "\Q$foreign\E", not the/,
     "the module logged the foreign Origin";

my $shot = servroot() . '/dashboard-refused.png';
is browse($p, "screenshot $shot"), $shot, "a screenshot";

no_page_errors($p);
is end_node($p), 0, "the browser script exited cleanly";
--- no_error_log
[error]
[warn]



=== TEST 4: the foreign origin, allowed by hookstream_allowed_origins; pings answered
--- http_config eval
http_config()
--- config eval
server_config("hookstream_allowed_origins "
              . "http://127.0.0.1:$ENV{TEST_NGINX_PORT2};\n",
              "hookstream_heartbeat 1s 1s;\n")
--- ws
my $base = 'http://127.0.0.1:' . server_port();
my $foreign = "http://127.0.0.1:$ENV{TEST_NGINX_PORT2}";
my $p = browser('allowed');

# signed in on the first server: the cookie is sent to both
like browse($p, "goto $base/demo/sign-in") // '', qr{/dashboard/$},
     "signed in";

# a list replaces the same-origin rule: the first server's own page is
# not on it
is browse($p, 'state refused'), 'refused', "its own origin, not listed";

browse($p, "goto $foreign/dashboard/");
is browse($p, 'state live'), 'live', "the listed origin: live";

ok publish({ type => 'issue', channel => 'issues',
             data => { id => 'iss_9', title => 'Seen from afar' } }),
   "an issue";

my $cols = browse_json($p, 'items issues 1');
is $cols->{issues}[0]{title}, 'Seen from afar', "it appears";

# a {"type":"ping"} every second: the page answers, the stream stays
sleep 3.5;
is browse($p, 'state live', 1000), 'live', "still live after 3 heartbeats";
is browse_json($p, 'info')->{sockets}, 1, "on its first socket";

no_page_errors($p);
is end_node($p), 0, "the browser script exited cleanly";
--- no_error_log
[error]
[warn]
missed its heartbeat
