# Credentials -> org (docs/auth.md): the directory file, API keys from
# ?token= and X-API-Key, the session cookie and its Origin rule, the
# masking of the token in logs, and nginx -t on a broken directory.

use Test::Hookstream;

use File::Temp ();

my $ORG1 = 'org_402c12c1ad14ea0a46fdcecdec00a2e8';
my $ORG2 = 'org_4665522cc7d38fbdb86cb822a5e492dd';
my $KEY1 = 'hs_test_45361972900c66f08a7341940e2290ac'
           . '32e0b7863df69d81d53f298bbaeb7667';
my $KEY2 = 'hs_live_39e0cdc0ba7d5b872546c2da377e38b1'
           . 'd8aee75972da71f1dda737527ba0d9f4';
my $SESSION = 'adf575ed132edcb28e749f06013c7800'
              . 'fb88cef9732a51184300dfa2f588e2ae';
my $SRC1 = 'src_8b78758b9b57427290f058fde0d5384e';
my $SRC2 = 'src_7d1078bea62a4729643c527f9ce7aa9f';

my $DIRECTORY = directory_json({
    $ORG1 => { api_keys => [$KEY1], sessions => [$SESSION],
               sources => [$SRC1], name => 'first' },
    $ORG2 => { api_keys => [$KEY2], sources => [$SRC2] },
});

# the directory most blocks share, outside the per-block data directory
my $dir_file = File::Temp->new(SUFFIX => '.json');
print {$dir_file} $DIRECTORY;
close $dir_file;

$ENV{TEST_NGINX_DIRECTORY} = "$dir_file";
$ENV{TEST_NGINX_DIRECTORY_JSON} = $DIRECTORY;
$ENV{TEST_NGINX_KEY1} = $KEY1;
$ENV{TEST_NGINX_SESSION} = $SESSION;
$ENV{TEST_NGINX_SRC1} = $SRC1;

# what a snippet needs
our ($org1, $org2, $key1, $key2, $session, $src1, $src2) =
    ($ORG1, $ORG2, $KEY1, $KEY2, $SESSION, $SRC1, $SRC2);

# the org a /v1/ws connection was given, from its welcome message
sub welcome_org {
    my ($c) = @_;

    return undef if !$c->upgraded;

    my $m = $c->recv_json_until(sub { $_[0]{type} eq 'welcome' }, 5);

    return $m ? $m->{data}{org_id} : undef;
}

# lines of the error log that hold $secret, less nginx's own debug lines
# that print the request as it was read, before any module ran
sub leaks {
    my ($secret) = @_;

    return grep {
        index($_, $secret) >= 0
        && !/\[debug\] \d+#\d+: \*\d+ (?:http request line|http args|http header|parse header): /
    } split /\n/, error_log_text();
}

sub cookie {
    return ['Cookie', "theme=dark; better-auth.session_token=$_[0]"];
}

$main::welcome_org = \&welcome_org;
$main::leaks = \&leaks;
$main::cookie = \&cookie;

run_tests();

__DATA__

=== TEST 1: no credential: 401 Missing API key
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws { hookstream_stream; }
--- ws
my $c = ws_connect("/v1/ws");
ok !$c->upgraded, "not upgraded";
is $c->status, 401, "status";
is $c->json->{error}, "Missing API key", "error message";
is $c->json->{status}, 401, "status in the body";

$c = ws_connect("/v1/ws?token=");
is $c->status, 401, "empty token: 401";
is $c->json->{error}, "Missing API key", "empty token counts as missing";
--- error_log
client sent no API key or session cookie



=== TEST 2: unknown keys: 401 Invalid API key
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws { hookstream_stream; }
--- ws
my $bad = 'hs_test_' . ('0' x 64);

my $c = ws_connect("/v1/ws?token=$bad");
is $c->status, 401, "bad ?token=: 401";
is $c->json->{error}, "Invalid API key", "error message";

$c = ws_connect("/v1/ws", headers => [['X-API-Key', $bad]]);
is $c->status, 401, "bad X-API-Key: 401";
is $c->json->{error}, "Invalid API key", "error message";

# a present but bad key does not fall back to a good header or cookie
$c = ws_connect("/v1/ws?token=$bad",
                headers => [['X-API-Key', $main::key1],
                            $main::cookie->($main::session)],
                origin => 'http://localhost');
is $c->status, 401, "bad ?token= wins over a good header and cookie";

ok !$main::leaks->($bad), "the bad key is not logged";
--- error_log eval
[qr/client sent an unknown API key \(token argument\), sha256:[0-9a-f]{8}\.\.\./,
 qr/client sent an unknown API key \(X-API-Key header\), sha256:[0-9a-f]{8}\.\.\./]



=== TEST 3: ?token= and X-API-Key resolve to their org
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws { hookstream_stream; }
--- ws
my $c = ws_connect("/v1/ws?token=$main::key1");
ok $c->upgraded, "?token= upgrades" or diag $c->status, $c->body;
is $main::welcome_org->($c), $main::org1, "?token=: the key's org";

$c = ws_connect("/v1/ws?a=1&token=$main::key2&b=2");
is $main::welcome_org->($c), $main::org2, "token among other arguments";

$c = ws_connect("/v1/ws", headers => [['X-API-Key', $main::key2]]);
ok $c->upgraded, "X-API-Key upgrades";
is $main::welcome_org->($c), $main::org2, "X-API-Key: the key's org";

# ?token= comes first
$c = ws_connect("/v1/ws?token=$main::key1",
                headers => [['X-API-Key', $main::key2]]);
is $main::welcome_org->($c), $main::org1, "?token= before X-API-Key";

# percent-escapes are decoded before hashing
(my $escaped = $main::key1) =~ s/_/%5F/g;
$c = ws_connect("/v1/ws?token=$escaped");
is $main::welcome_org->($c), $main::org1, "escaped token";
--- no_error_log
client sent no
client sent an unknown



=== TEST 4: session cookie, same origin when no list is configured
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws { hookstream_stream; }
--- ws
my $ck = $main::cookie->($main::session);

my $c = ws_connect("/v1/ws", headers => [$ck], origin => 'http://localhost');
ok $c->upgraded, "same origin: upgraded" or diag $c->status, $c->body;
is $main::welcome_org->($c), $main::org1, "the session's org";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => 'https://LOCALHOST:443');
ok $c->upgraded, "same host, other scheme, explicit default port";

my $p = server_port();
$c = ws_connect("/v1/ws", headers => [$ck], origin => "http://localhost",
                host_header => "localhost:$p");
is $c->status, 403, "the port is part of the origin";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => "http://localhost:$p",
                host_header => "localhost:$p");
ok $c->upgraded, "same host and port";

$c = ws_connect("/v1/ws", headers => [$ck], origin => 'https://evil.example');
is $c->status, 403, "foreign origin: 403";
is $c->json->{error}, "Origin not allowed", "error message";

$c = ws_connect("/v1/ws", headers => [$ck]);
is $c->status, 403, "no Origin: 403";

$c = ws_connect("/v1/ws", headers => [$ck], origin => 'null');
is $c->status, 403, "Origin null: 403";

$c = ws_connect("/v1/ws", headers => [$ck, ['Origin', 'http://localhost']],
                origin => 'http://localhost');
is $c->status, 403, "two Origin headers: 403";

$c = ws_connect("/v1/ws", headers => [$main::cookie->('nope')],
                origin => 'http://localhost');
is $c->status, 401, "unknown session: 401";
is $c->json->{error}, "Invalid session", "error message";

$c = ws_connect("/v1/ws", headers => [$main::cookie->('nope')],
                origin => 'https://evil.example');
is $c->status, 403, "unknown session from a foreign origin: 403 first";

ok !$main::leaks->($main::session), "the session token is not logged";
--- error_log
client sent a session cookie from Origin "https://evil.example"
client sent a session cookie without Origin
client sent an unknown session cookie



=== TEST 5: hookstream_allowed_origins, exact values and regexes
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws {
    hookstream_allowed_origins https://app.example.com
                               "~^https://[a-z0-9-]+\.preview\.example\.org$";
    hookstream_stream;
}
--- ws
my $ck = $main::cookie->($main::session);

my $c = ws_connect("/v1/ws", headers => [$ck],
                   origin => 'https://app.example.com');
ok $c->upgraded, "exact origin" or diag $c->status, $c->body;
is $main::welcome_org->($c), $main::org1, "the session's org";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => 'https://App.Example.COM');
ok $c->upgraded, "exact origin, other case";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => 'https://pr-12.preview.example.org');
ok $c->upgraded, "regex origin";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => 'https://pr-12.preview.example.org.evil.example');
is $c->status, 403, "anchored regex refuses a longer host";

$c = ws_connect("/v1/ws", headers => [$ck],
                origin => 'https://app.example.com:8443');
is $c->status, 403, "exact means exact: another port";

$c = ws_connect("/v1/ws", headers => [$ck], origin => 'http://localhost');
is $c->status, 403, "same origin is not implied once a list is set";

# keys do not care about Origin
$c = ws_connect("/v1/ws?token=$main::key1", origin => 'https://evil.example');
ok $c->upgraded, "an API key from any origin";



=== TEST 6: hookstream_session_cookie names the cookie
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws {
    hookstream_session_cookie __Secure-hs.session;
    hookstream_stream;
}
--- ws
my $c = ws_connect("/v1/ws",
                   headers => [['Cookie',
                                "a=1; __Secure-hs.session=$main::session"]],
                   origin => 'http://localhost');
ok $c->upgraded, "named cookie" or diag $c->status, $c->body;

$c = ws_connect("/v1/ws", headers => [$main::cookie->($main::session)],
                origin => 'http://localhost');
is $c->status, 401, "the default name is not read any more";



=== TEST 7: hookstream_source: key required, the key's org owns the source
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws/source/ { hookstream_source; }
--- ws
my $c = ws_connect("/v1/ws/source/$main::src1?token=$main::key1");
ok $c->upgraded, "own source" or diag $c->status, $c->body;

$c = ws_connect("/v1/ws/source/$main::src1",
                headers => [['X-API-Key', $main::key2]]);
is $c->status, 403, "another org's source: 403";

$c = ws_connect("/v1/ws/source/$main::src1",
                headers => [$main::cookie->($main::session)],
                origin => 'http://localhost');
is $c->status, 401, "a session cookie is not a credential here";
is $c->json->{error}, "Missing API key", "error message";

$c = ws_connect("/v1/ws/source/src_" . ('0' x 32) . "?token=$main::key1");
is $c->status, 404, "unknown source: 404";



=== TEST 8: the token is masked in $request, $args, $request_uri
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
log_format auth 'AUTH $request|$args|$request_uri|$arg_token';
--- config
location /v1/ws {
    access_log logs/access.log auth;
    hookstream_stream;
}
location /v1/ws/alias {
    access_log logs/access.log auth;
    rewrite ^ /v1/ws?token=rewritten break;
    hookstream_stream;
}
--- ws
my $key = $main::key1;
my $stars = '*' x length $key;

my $c = ws_connect("/v1/ws?x=1&token=$key&TOKEN=$key&y=2");
ok $c->upgraded, "upgraded";
$c->close if $c->can('close');
undef $c;

$c = ws_connect("/v1/ws?token=hs_test_bad");
is $c->status, 401, "bad key";

# a rewrite gives the request new arguments in new memory; which token
# is used depends on whether the rewrite module or ours goes first
$c = ws_connect("/v1/ws/alias?token=$key");
ok $c->upgraded || $c->status == 401, "rewritten arguments";

stop_nginx();

my $acc = access_log_text();

ok index($acc, $key) < 0, "the access log never holds the key"
    or diag $acc;
ok index($acc, 'hs_test_bad') < 0, "nor a bad key";
ok index($acc, 'rewritten') < 0, "nor a token set by a rewrite";

like $acc, qr{AUTH GET /v1/ws\?x=1&token=\Q$stars\E&TOKEN=\Q$stars\E&y=2 HTTP/1\.1\|x=1&token=\Q$stars\E&TOKEN=\Q$stars\E&y=2\|/v1/ws\?x=1&token=\Q$stars\E&TOKEN=\Q$stars\E&y=2\|\Q$stars\E},
     "the same length of '*' everywhere";

my @l = $main::leaks->($key);
ok !@l, "the module never logs the key, at debug level either"
    or diag join "\n", @l;
ok !$main::leaks->('hs_test_bad'), "nor a bad one";



=== TEST 9: masked before a bad handshake or an access-phase refusal logs it
--- http_config
hookstream_directory $TEST_NGINX_DIRECTORY;
--- config
location /v1/ws { hookstream_stream; }
location /closed {
    deny all;
    hookstream_stream;
}
--- ws
my $key = $main::key1;

my $r = http_get("/v1/ws?token=$key");
is $r->status, 400, "no upgrade: 400";

my $c = ws_connect("/closed?token=$key");
is $c->status, 403, "deny all: 403";

stop_nginx();

ok index(access_log_text(), $key) < 0, "access log is clean"
    or diag access_log_text();

my @l = $main::leaks->($key);
ok !@l, "error log is clean" or diag join "\n", @l;
--- error_log
access forbidden by rule



=== TEST 10: a malformed directory stops nginx -t with file:line:column
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- config
location /v1/ws { hookstream_stream; }
--- ws
my ($rc, $out) = nginx_cmd('-t');
is $rc, 0, "the good file passes nginx -t" or diag $out;

my $file = data_dir() . "/directory.json";

write_data_file("directory.json", <<"JSON");
{
    "orgs": {
        "$main::org1": {
            "api_keys": ["sha256:aa",]
        }
    }
}
JSON

($rc, $out) = nginx_cmd('-t');
isnt $rc, 0, "nginx -t fails";
like $out, qr/\[emerg\].*invalid JSON in hookstream_directory \Q$file\E:4:38 near "\]"/,
     "names file:line:column";

write_data_file("directory.json", '{"orgs": {');
($rc, $out) = nginx_cmd('-t');
like $out, qr/\Q$file\E:1:11: unexpected end of file/, "truncated file";

write_data_file("directory.json", '');
($rc, $out) = nginx_cmd('-t');
like $out, qr/\Q$file\E:1:1: unexpected end of file/, "empty file";

write_data_file("directory.json", '{"orgs": {}} {}');
($rc, $out) = nginx_cmd('-t');
like $out, qr/\Q$file\E:1:14 near "\{\}"/, "trailing garbage";

# a reload with a broken file keeps the running configuration
ok !reload_nginx(), "reload refused";
my $c = ws_connect("/v1/ws?token=$main::key1");
ok $c->upgraded, "the old directory still serves";
--- allow_error_log
hookstream_directory



=== TEST 11: structural errors name the org and the field
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- user_files
>>> directory.json
{"orgs": {}}
--- config
location /v1/ws { hookstream_stream; }
--- ws
my $o1 = $main::org1;
my $o2 = $main::org2;
my $h = 'sha256:' . sha256_hex($main::key1);

my @cases = (
    ['[]', qr/the top level is not a JSON object/],
    ['{"version": 1}', qr/no "orgs" object/],
    ['{"orgs": []}', qr/"orgs" is not an object/],
    ['{"orgs": {"org_ABC": {}}}', qr/invalid org id "org_ABC"/],
    [qq({"orgs": {"${\ uc $o1}": {}}}), qr/invalid org id/],
    [qq({"orgs": {"$o1": []}}), qr/org "$o1" is not an object/],
    [qq({"orgs": {"$o1": {"api_keys": "x"}}}),
     qr/org "$o1": "api_keys" is not an array/],
    [qq({"orgs": {"$o1": {"sessions": [1]}}}),
     qr/org "$o1": "sessions"\[0\] is not a string/],
    [qq({"orgs": {"$o1": {"api_keys": ["$h", "sha256:12"]}}}),
     qr/org "$o1": "api_keys"\[1\] is not "sha256:" followed by 64 hex/],
    [qq({"orgs": {"$o1": {"sources": ["src_123"]}}}),
     qr/org "$o1": "sources"\[0\] "src_123" is not "src_" and 32/],
    [qq({"orgs": {"$o1": {}, "$o1": {}}}), qr/org "$o1" is listed twice/],
    [qq({"orgs": {"$o1": {"api_keys": ["$h"]}, "$o2": {"api_keys": ["$h"]}}}),
     qr/API key sha256:[0-9a-f]{8}\.\.\. is listed by both org "org_[0-9a-f]{32}" and org "org_[0-9a-f]{32}"/],
    [qq({"orgs": {"$o1": {"sources": ["$main::src1"]}, )
     . qq("$o2": {"sources": ["$main::src1"]}}}),
     qr/source \Q$main::src1\E is listed by both org/],
);

for my $case (@cases) {
    write_data_file("directory.json", $case->[0]);
    my ($rc, $out) = nginx_cmd('-t');
    isnt $rc, 0, "refused: $case->[0]";
    like $out, $case->[1], "message for $case->[0]";
}

# a raw key pasted in place of its hash: refused, and not echoed
write_data_file("directory.json",
                qq({"orgs": {"$o1": {"api_keys": ["$main::key1"]}}}));
my ($rc, $out) = nginx_cmd('-t');
like $out, qr/"api_keys"\[0\] holds a raw API key/, "raw key spotted";
ok index($out, $main::key1) < 0, "and not printed";

# accepted: upper-case hash digits, repeats within one org, extra fields
write_data_file("directory.json",
                qq({"orgs": {"$o1": {"api_keys": ["sha256:${\ uc substr $h, 7}", "$h"],
                                     "plan": "pro", "sources": []}},
                    "generated_at": "2026-03-01T14:30:00.123Z"}));
($rc, $out) = nginx_cmd('-t');
is $rc, 0, "upper-case hex, a repeated hash and extra fields are fine"
    or diag $out;
--- allow_error_log
hookstream_directory



=== TEST 12: a large directory
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
--- user_files eval
my %orgs;
for my $i (1 .. 1000) {
    my $org = sprintf 'org_%032x', $i;
    $orgs{$org} = {
        api_keys => [map { sprintf 'sha256:%064x', $i * 100 + $_ } 1 .. 20],
        sessions => [map { sprintf 'sha256:%064x', $i * 100 + $_ } 1 .. 20],
        sources  => [map { sprintf 'src_%032x', $i * 100 + $_ } 1 .. 20],
    };
}
push @{ $orgs{sprintf 'org_%032x', 777}{api_keys} },
     'sha256:' . sha256_hex($main::key1);
[['directory.json', encode_json({ orgs => \%orgs })]];
--- config
location /v1/ws { hookstream_stream; }
location /v1/ws/source/ { hookstream_source; }
--- ws
my $c = ws_connect("/v1/ws?token=$main::key1");
is $main::welcome_org->($c), sprintf('org_%032x', 777), "found among 20k";

$c = ws_connect(sprintf("/v1/ws/source/src_%032x?token=%s", 77705,
                        $main::key1));
ok $c->upgraded, "its source among 20k" or diag $c->status, $c->body;

$c = ws_connect(sprintf("/v1/ws/source/src_%032x?token=%s", 77805,
                        $main::key1));
is $c->status, 403, "the next org's source";
