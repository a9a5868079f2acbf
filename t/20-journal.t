# The embedded pipeline (docs/journal.md): acks after the record is in the
# journal, the record format, segment names, rotation and locks, fsync=off,
# an unwritable directory (not_stored, a clear error line, recovery), and
# numbering across a reload.

use Test::Hookstream;

use Fcntl qw(:flock);

my $ORG = 'org_7f0c3a1e5b2d4c6f8a9b0c1d2e3f4a5b';
my $SRC = 'src_1a2b3c4d5e6f708192a3b4c5d6e7f809';
my $KEY = 'hs_live_' . ('5e' x 32);

$ENV{TEST_NGINX_DIRECTORY_JSON} = directory_json({
    $ORG => { api_keys => [$KEY], sources => [$SRC] },
});

# what snippets see, as $main::name ($src is a name the harness uses)
use vars qw($org $src $key $SEGMENT);

($org, $src, $key) = ($ORG, $SRC, $KEY);

$SEGMENT = qr/^(\d{4})-(\d{16})\.ndjson$/;

# segment names of a journal directory, in the order a reader takes them
sub segments {
    my ($dir) = @_;

    opendir my $dh, $dir or die "opendir $dir: $!";
    my @names = sort grep { /$SEGMENT/ } readdir $dh;
    closedir $dh;

    return @names;
}

# every record: [segment, line text, decoded object]
sub records {
    my ($dir) = @_;
    my @out;

    for my $name (segments($dir)) {
        open my $fh, '<:raw', "$dir/$name" or die "open $name: $!";
        local $/;
        my $text = <$fh>;
        close $fh;

        next if $text eq '';

        die "$name does not end with a newline" if $text !~ /\n\z/;

        for my $line (split /\n/, $text) {
            push @out, [$name, $line, decode_json($line)];
        }
    }

    return @out;
}

# true when a writer still holds the segment
sub locked {
    my ($path) = @_;

    open my $fh, '<', $path or die "open $path: $!";
    my $free = flock $fh, LOCK_SH | LOCK_NB;
    close $fh;

    return !$free;
}

sub source {
    my $c = ws_connect("/v1/ws/source/$main::src?token=$main::key");
    ok $c->upgraded, "source upgraded" or diag $c->status, $c->body;
    return $c;
}

workers(2);
run_tests();

__DATA__

=== TEST 1: an inbound event is acked once its record is in the journal
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/journal";
my $c = source();

my @sent = (
    '{"type":"order.created","data":{"n":18446744073709551615}}',
    qq({"type":"pretty",\n  "data": {"a": [1,\n    2]}\n}),
    '{"idempotency_key":"k-1","data":{"t":1772375400123456789}}',
);

$c->send_text($_) for @sent;

my @acks = map { $c->recv_json } @sent;

for my $i (0 .. $#sent) {
    json_ok $acks[$i], { type => 'ack', event_id => qr/^evt_[0-9a-f]{32}$/ },
        "ack $i";
}

# acked means written: the records are there now, nothing waits
my @recs = records($dir);
is scalar @recs, 3, "three records";

for my $i (0 .. $#recs) {
    my ($name, $line, $r) = @{ $recs[$i] };

    like $name, qr/^\d{4}-\d{16}\.ndjson$/, "segment name $name";
    is $r->{id}, $acks[$i]{event_id}, "record $i has the acked id";
    json_ok $r, {
        org_id => $main::org,
        source_id => $main::src,
        method => 'WS',
        received_at => qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    }, "record $i fields";
}

# the body byte for byte; a line feed (JSON whitespace) becomes a space
(my $flat = $sent[1]) =~ tr/\n/ /;

like $recs[0][1], qr/,"body":\Q$sent[0]\E\}\z/, "big integer kept";
like $recs[1][1], qr/,"body":\Q$flat\E\}\z/, "line feeds made spaces";
like $recs[2][1], qr/,"body":\Q$sent[2]\E\}\z/, "nanoseconds kept";

is $recs[0][2]{type}, 'order.created', "type";
ok !defined $recs[2][2]{type}, "no type: null";
ok !defined $recs[0][2]{idempotency_key}, "no key: null";
is $recs[2][2]{idempotency_key}, 'k-1', "idempotency_key";

my $seg = "$dir/$recs[0][0]";
is sprintf('%o', (stat $dir)[2] & 07777), '755', "directory 0755";
is sprintf('%o', (stat $seg)[2] & 07777), '644', "segment 0644";
ok locked($seg), "the writer holds the segment";
opendir my $dh, $dir or die "$dir: $!";
ok !grep({ /\.tmp$/ } readdir $dh), "no creation names left";
closedir $dh;
--- no_error_log
[error]
[warn]



=== TEST 2: a webhook's record: path, query, headers, body
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/ingest/ { hookstream_ingest; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/journal";
my $json = qq({\n  "type": "invoice.paid",\n  )
           . qq("amount": 18446744073709551615\n});

my $r = http_post("/v1/ingest/$main::src?a=1&b=two", $json, headers => {
    'Content-Type' => 'application/json',
    'X-Signature' => 'sig',
});
is $r->status, 200, "ingest 200" or diag $r->dump;
my $id = $r->json->{event_id};

$r = http_post("/v1/ingest/$main::src", "plain\ttext", headers => {
    'Content-Type' => 'text/plain',
});
is $r->status, 200, "text ingest 200" or diag $r->dump;
my $id2 = $r->json->{event_id};

# two connections: perhaps two workers, two segments
my %by_id = map { $_->[2]{id} => $_ } records($dir);
is scalar keys %by_id, 2, "two records";

my ($line, $rec) = @{ $by_id{$id} || [] }[1, 2];
(my $flat = $json) =~ tr/\n/ /;

ok $rec, "the first is there";
json_ok $rec, {
    org_id => $main::org,
    source_id => $main::src,
    method => 'POST',
    type => 'invoice.paid',
    path => "/v1/ingest/$main::src",
    query => 'a=1&b=two',
    content_type => 'application/json',
    source_ip => '127.0.0.1',
    headers => { 'X-Signature' => 'sig' },
}, "webhook record";
like $line, qr/,"body":\Q$flat\E\}\z/, "JSON body spliced, one line";

$rec = $by_id{$id2} ? $by_id{$id2}[2] : {};
is $rec->{body}, "plain\ttext", "text body as a JSON string";
ok exists $rec->{query} && !defined $rec->{query}, "no query: null";
--- no_error_log
[error]
[warn]



=== TEST 3: fsync=off acks after the write
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal fsync=off;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $c = source();

$c->send_text(qq({"type":"e","data":{"i":$_}})) for 1 .. 5;
my @acks = map { $c->recv_json } 1 .. 5;

is scalar(grep { $_ && $_->{type} eq 'ack' } @acks), 5, "five acks";

my @recs = records("$TEST_NGINX_DATA_DIR/journal");
is_deeply [map { $_->[2]{id} } @recs], [map { $_->{event_id} } @acks],
    "records in ack order";
--- no_error_log
[error]
[warn]



=== TEST 4: pipelined events: acks in order, each record once
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $n = 3000;
my $c = source();

for (my $i = 0; $i < $n; $i += 500) {
    $c->send_frames(map {
        +{ opcode => OP_TEXT, payload => qq({"type":"p","data":{"i":$_}}) }
    } $i .. $i + 499);
}

my @ids;

for my $i (0 .. $n - 1) {
    my $m = $c->recv_json(10);
    last if !$m || $m->{type} ne 'ack';
    push @ids, $m->{event_id};
}

is scalar @ids, $n, "$n acks";

my @recs = records("$TEST_NGINX_DATA_DIR/journal");
is_deeply [map { $_->[2]{id} } @recs], \@ids, "records in ack order";
is_deeply [map { $_->[2]{body}{data}{i} } @recs], [0 .. $n - 1],
    "in the order sent";
--- no_error_log
[error]
[warn]



=== TEST 5: segments rotate by size, numbered in order, the old ones unlocked
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal segment=4k;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/journal";
my $c = source();
my $pad = 'x' x 300;

for my $i (1 .. 60) {
    $c->send_text(qq({"type":"r","data":{"i":$i,"pad":"$pad"}}));
    my $m = $c->recv_json;
    die "no ack for $i" if !$m || $m->{type} ne 'ack';
}

my @names = segments($dir);
ok @names >= 4, scalar(@names) . " segments";

my ($slot) = $names[0] =~ $SEGMENT;
my @seq = map { /$SEGMENT/; $2 + 0 } @names;

ok !grep({ !/^$slot-/ } @names), "one worker's slot";
is_deeply \@seq, [$seq[0] .. $seq[0] + $#seq], "consecutive numbers";

for my $name (@names[0 .. $#names - 1]) {
    ok -s "$dir/$name" >= 4096, "$name reached the size";
    ok !locked("$dir/$name"), "$name finished";
}

my @recs = records($dir);
is_deeply [map { $_->[2]{body}{data}{i} } @recs], [1 .. 60],
    "every record once, in order";
--- no_error_log
[error]
[warn]



=== TEST 6: an unwritable journal: not_stored, an error line, then recovery
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/ws/source/ { hookstream_source; }
location /v1/ingest/ { hookstream_ingest; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/journal";
my $c = source();

$c->send_text('{"type":"before"}');
json_ok $c->recv_json, { type => 'ack' }, "stored before";

# the directory goes, a file takes its name: nothing can be written
system('rm', '-rf', $dir) == 0 or die "rm: $?";
open my $fh, '>', $dir or die "$dir: $!";
close $fh;

$c->send_text('{"type":"lost"}');
json_ok $c->recv_json, { type => 'error', data => { code => 'not_stored' } },
    "not_stored";

my $r = http_post("/v1/ingest/$main::src", '{"type":"lost"}');
is $r->status, 503, "webhook not stored: 503" or diag $r->dump;

$c->send_text('{"type":"lost again"}');
json_ok $c->recv_json, { type => 'error', data => { code => 'not_stored' } },
    "the connection stays open";

# back: the next batch starts a new segment
unlink $dir or die "unlink: $!";
mkdir $dir or die "mkdir: $!";

$c->send_text('{"type":"after"}');
my $m = $c->recv_json;
json_ok $m, { type => 'ack' }, "stored after";

my @recs = records($dir);
is scalar @recs, 1, "one record in the new directory";
is $recs[0][2]{id}, $m->{event_id}, "the one acked";
--- error_log eval
[qr/\[error\] .*hookstream journal: opendir\(\) ".*journal" failed, /,
 '1 event(s) not stored (20: Not a directory)',
 qr/\[notice\] .*hookstream journal: writing to ".*\/\d{4}-\d{16}\.ndjson" /]



=== TEST 7: numbering goes on across a reload
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/journal;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/journal";

my $c = source();
$c->send_text('{"type":"first"}');
json_ok $c->recv_json, { type => 'ack' }, "first";
$c->close;

my ($before) = segments($dir);

ok reload_nginx(), "reloaded";

# each worker slot starts a segment after every existing one of its slot
for my $i (1 .. 4) {
    $c = source();
    $c->send_text(qq({"type":"second","data":{"i":$i}}));
    json_ok $c->recv_json, { type => 'ack' }, "after the reload $i";
    $c->close;
}

my @names = segments($dir);
ok @names >= 2, "new segments";

for my $name (grep { $_ ne $before } @names) {
    my ($slot, $seq) = $name =~ $SEGMENT;
    my ($bslot, $bseq) = $before =~ $SEGMENT;

    ok $seq > $bseq, "$name after $before" if $slot eq $bslot;
}

my @types = map { $_->[2]{type} } records($dir);
is scalar(grep { $_ eq 'first' } @types), 1, "the first record kept";
is scalar(grep { $_ eq 'second' } @types), 4, "the others there";
--- no_error_log
[error]
[warn]



=== TEST 8: the directory and its parents are made at start
--- http_config
hookstream_directory $TEST_NGINX_DATA_DIR/directory.json;
hookstream_journal $TEST_NGINX_DATA_DIR/a/b/journal/;
--- config
location /v1/ws/source/ { hookstream_source; }
--- user_files
>>> directory.json
$TEST_NGINX_DIRECTORY_JSON
--- ws
my $dir = "$TEST_NGINX_DATA_DIR/a/b/journal";

ok -d $dir, "made";
is sprintf('%o', (stat $dir)[2] & 07777), '755', "mode 755";

my $c = source();
$c->send_text('{"type":"x"}');
json_ok $c->recv_json, { type => 'ack' }, "stored";
is scalar(segments($dir)), 1, "one segment";
--- no_error_log
[error]
[warn]
