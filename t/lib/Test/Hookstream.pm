package Test::Hookstream;

# Data-driven nginx tests in the spirit of Test::Nginx, on Debian's
# Test::Base: each "=== TEST" block of a .t file's __DATA__ becomes an
# nginx configuration, a server started for it, a request and/or a
# WebSocket script run against it, and checks of the answer and the logs.
# docs/testing.md describes the sections and helpers.

use strict;
use warnings;

use Test::Base ();
use Test::More ();

use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use Fcntl qw(:flock);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use Test::Hookstream::HTTP ();
use Test::Hookstream::IO;
use Test::Hookstream::WS ();

our @ISA = ('Test::Base');

our @EXPORT = qw(
    run_tests workers repeat_each no_module log_level

    server_port tls_port servroot data_dir repo_root module_path
    tls_cert tls_key error_log_path error_log_text access_log_path
    access_log_text subst_vars current_block is_tls

    start_nginx stop_nginx restart_nginx reload_nginx nginx_running
    master_pid worker_pids kill_worker kill_nginx signal_nginx
    nginx_cmd write_data_file

    ws_connect http_request http_get http_post

    free_port wait_for_port start_process stop_process wait_until

    start_instance stop_instance

    sha256_hex random_hex make_api_key directory_json
    encode_json decode_json json_match json_ok

    note done_testing subtest explain BAIL_OUT
);

# Test::More functions Test::Base does not pass on
{
    no strict 'refs';

    for my $f (qw(note done_testing subtest explain BAIL_OUT)) {
        *{"Test::Hookstream::$f"} = \&{"Test::More::$f"};
    }
}

# what a --- ws snippet sees besides Test::More
my @SNIPPET_HELPERS = qw(
    ws_connect http_request http_get http_post
    server_port tls_port servroot data_dir repo_root tls_cert tls_key
    error_log_path error_log_text access_log_path access_log_text
    subst_vars current_block is_tls
    start_nginx stop_nginx restart_nginx reload_nginx nginx_running
    master_pid worker_pids kill_worker kill_nginx signal_nginx nginx_cmd
    write_data_file free_port wait_for_port start_process stop_process
    start_instance stop_instance
    wait_until sha256_hex random_hex make_api_key directory_json
    encode_json decode_json json_match json_ok
);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# file-wide options
my %Opt = (
    workers      => 1,
    repeat       => 1,
    module       => 1,
    log_level    => 'debug',
    stop_timeout => $ENV{HOOKSTREAM_STOP_TIMEOUT} || 5,
    ws_timeout   => $ENV{HOOKSTREAM_WS_TIMEOUT} || 120,
);

# the scratch environment of this file: prefix, ports, certificate
my %Env;

# the running server and the block being run
my %Run = (
    master_pid => undef,
    sections   => {},
    block      => undef,
    name       => '',
    tls        => 0,
    log_off    => 0,
    acc_off    => 0,
    out_text   => '',
    san_off    => {},
);

my @Port_locks;
my %Processes;
my %Instances;

sub import {
    my $class = shift;

    # Test::Base wires the caller's __DATA__, the Test::More exports and
    # our @EXPORT; the default object becomes a Test::Hookstream
    unshift @_, $class;
    goto &Test::Base::import;
}

# ---------------------------------------------------------------------------
# file-wide settings

sub workers {
    $Opt{workers} = shift if @_;
    return $Opt{workers};
}

sub repeat_each {
    $Opt{repeat} = shift if @_;
    return $Opt{repeat};
}

sub no_module {
    $Opt{module} = 0;
}

sub log_level {
    $Opt{log_level} = shift if @_;
    return $Opt{log_level};
}

# ---------------------------------------------------------------------------
# the scratch environment

sub repo_root {
    return $Env{repo} //= abs_path(dirname(__FILE__) . '/../../..');
}

sub _module_wanted {
    return 0 if !$Opt{module};
    return 0 if ($ENV{HOOKSTREAM_MODULE} // '') eq 'none';
    return 1;
}

sub module_path {
    return undef if !_module_wanted();

    my $m = $ENV{HOOKSTREAM_MODULE};
    $m = repo_root() . '/build/nginx/ngx_hookstream_module.so'
        if !defined $m || $m eq '';

    $m = File::Spec->rel2abs($m, repo_root()) if $m !~ m{^/};

    return $m;
}

sub _nginx_bin {
    return $ENV{NGINX_BIN} || '/usr/sbin/nginx';
}

sub _nofile_limits {
    my $out = `sh -c 'ulimit -Sn; ulimit -Hn' 2>/dev/null` // '';
    my ($soft, $hard) = split /\s+/, $out;

    for ($soft, $hard) {
        $_ = 1 << 20 if !defined $_ || $_ !~ /^\d+$/;
    }

    return ($soft, $hard);
}

sub _init_env {
    return if $Env{init};

    $Env{init} = 1;
    $Env{pid} = $$;

    $SIG{PIPE} = 'IGNORE';

    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub {
            _teardown();
            exit 128 + ($sig eq 'INT' ? 2 : $sig eq 'TERM' ? 15 : 1);
        };
    }

    my $bin = _nginx_bin();
    die "Test::Hookstream: nginx binary '$bin' is not executable "
        . "(set NGINX_BIN)\n" if !-x $bin;

    if (my $m = module_path()) {
        die "Test::Hookstream: the hookstream module is not at '$m': run "
            . "'make module', set HOOKSTREAM_MODULE to the built .so, or "
            . "HOOKSTREAM_MODULE=none for tests that do not need it\n"
            if !-f $m;
    }

    my $name = basename($0);
    $name =~ s/\.t$//;
    $name =~ s/[^A-Za-z0-9_.-]/_/g;

    _reap_stale();

    my $prefix = repo_root() . "/t/servroot-$name-$$";

    remove_tree($prefix) if -e $prefix;

    for my $d (qw(conf logs html data tmp)) {
        make_path("$prefix/$d");
    }

    $Env{prefix} = $prefix;
    $Env{port} = free_port();
    $Env{tls_port} = free_port();
    $Env{cert} = "$prefix/conf/cert.pem";
    $Env{key} = "$prefix/conf/cert.key";

    my $rc = _run_quiet('openssl', 'req', '-x509', '-newkey', 'rsa:2048',
                        '-nodes', '-days', '1', '-subj', '/CN=localhost',
                        '-addext',
                        'subjectAltName=DNS:localhost,IP:127.0.0.1',
                        '-keyout', $Env{key}, '-out', $Env{cert});

    die "Test::Hookstream: openssl could not make a certificate\n"
        if $rc != 0 || !-s $Env{cert};

    my ($soft, $hard) = _nofile_limits();
    $Env{nofile} = $soft < 8192 ? ($hard < 8192 ? $hard : 8192) : undef;
    $Env{connections} = 4096;
    $Env{connections} = $Env{nofile}
        if defined $Env{nofile} && $Env{nofile} < 4096;

    %ENV = (%ENV, _vars());
}

# A test process that was killed (not interrupted) leaves its nginx
# running and its server root behind: stop such servers, and remove the
# roots that were not kept on purpose (HOOKSTREAM_KEEP leaves a KEPT file).
sub _reap_stale {
    my $t = repo_root() . '/t';

    opendir my $dh, $t or return;

    for my $e (readdir $dh) {
        next if $e !~ /^servroot-.+-(\d+)$/;

        my $owner = $1;
        next if $owner == $$ || _alive($owner);

        my $dir = "$t/$e";

        if (open my $fh, '<', "$dir/logs/nginx.pid") {
            my ($pid) = (<$fh> // '') =~ /^(\d+)/;

            if ($pid && _alive($pid) && _cmdline($pid) =~ /\Q$dir\E/) {
                my @all = ($pid, _children($pid));
                kill 'KILL', @all;
                _wait_gone(\@all, 3);
            }
        }

        remove_tree($dir) if !-e "$dir/KEPT";
    }
}

sub _run_quiet {
    my (@cmd) = @_;

    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec { $cmd[0] } @cmd or POSIX::_exit(127);
    }

    waitpid $pid, 0;
    return $? >> 8;
}

sub _vars {
    return (
        TEST_NGINX_PORT        => $Env{port},
        TEST_NGINX_TLS_PORT    => $Env{tls_port},
        TEST_NGINX_SERVER_ROOT => $Env{prefix},
        TEST_NGINX_DATA_DIR    => "$Env{prefix}/data",
        TEST_NGINX_HTML_DIR    => "$Env{prefix}/html",
        TEST_NGINX_MODULE      => module_path() // '',
        TEST_NGINX_TLS_CERT    => $Env{cert},
        TEST_NGINX_TLS_KEY     => $Env{key},
        TEST_NGINX_REPO_ROOT   => repo_root(),
    );
}

sub server_port     { _init_env(); $Env{port} }
sub tls_port        { _init_env(); $Env{tls_port} }
sub servroot        { _init_env(); $Env{prefix} }
sub data_dir        { _init_env(); "$Env{prefix}/data" }
sub tls_cert        { _init_env(); $Env{cert} }
sub tls_key         { _init_env(); $Env{key} }
sub error_log_path  { _init_env(); "$Env{prefix}/logs/error.log" }
sub access_log_path { _init_env(); "$Env{prefix}/logs/access.log" }
sub current_block   { $Run{block} }
sub is_tls          { $Run{tls} }

# Replace $TEST_NGINX_* names (ours, then any from %ENV) in a string.
sub subst_vars {
    my ($text) = @_;

    return $text if !defined $text || ref $text;

    _init_env();
    my %v = _vars();

    $text =~ s{\$(TEST_NGINX_[A-Z0-9_]+)}{
        exists $v{$1} ? $v{$1} : exists $ENV{$1} ? $ENV{$1} : "\$$1"
    }ge;

    return $text;
}

sub _subst_deep {
    my ($v) = @_;

    return subst_vars($v) if !ref $v;
    return [map { _subst_deep($_) } @$v] if ref $v eq 'ARRAY';
    return { map { $_ => _subst_deep($v->{$_}) } keys %$v }
        if ref $v eq 'HASH';

    return $v;
}

sub _slurp_from {
    my ($path, $off) = @_;

    open my $fh, '<:raw', $path or return '';

    if ($off) {
        my $size = -s $fh;
        $off = 0 if $size < $off;
        seek $fh, $off, 0;
    }

    local $/;
    my $s = <$fh>;

    return $s // '';
}

# error_log_text(): what nginx logged since the current block began (its
# start included); error_log_text(all => 1): the whole file.
sub error_log_text {
    my (%o) = @_;
    return _slurp_from(error_log_path(), $o{all} ? 0 : $Run{log_off});
}

sub access_log_text {
    my (%o) = @_;
    return _slurp_from(access_log_path(), $o{all} ? 0 : $Run{acc_off});
}

# write_data_file($name, $content): a file under the data directory
sub write_data_file {
    my ($name, $content) = @_;

    die "write_data_file: '$name' leaves the data directory\n"
        if $name =~ m{(?:^|/)\.\.(?:/|$)} || $name =~ m{^/};

    my $path = data_dir() . "/$name";
    make_path(dirname($path));

    open my $fh, '>:raw', "$path.tmp$$" or die "open $path: $!\n";
    print {$fh} $content // '';
    close $fh or die "write $path: $!\n";
    rename "$path.tmp$$", $path or die "rename $path: $!\n";

    return $path;
}

# ---------------------------------------------------------------------------
# ports and helper processes

sub _port_range {
    my ($lo, $hi) = (32768, 60999);

    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        my $l = <$fh>;
        ($lo, $hi) = split /\s+/, $l if $l && $l =~ /^\s*\d+\s+\d+/;
    }

    # stay out of the ephemeral range: a client socket of a test may take
    # any port there, and nginx could not bind it afterwards
    return (10240, $lo - 1) if $lo - 1 - 10240 >= 2000;
    return ($hi + 1, 65535) if 65535 - ($hi + 1) >= 2000;
    return (10240, 65535);
}

# A loopback TCP port nobody uses, reserved for this process: a lock file
# held until exit keeps parallel test files (and other users of this
# harness on the machine) from taking it too.
sub free_port {
    my $dir = File::Spec->tmpdir . '/hookstream-test-ports';

    if (!-d $dir) {
        mkdir $dir;
        chmod 01777, $dir;
    }

    my ($lo, $hi) = _port_range();

    for (1 .. 1000) {
        my $port = $lo + int rand($hi - $lo + 1);

        open my $lock, '>>', "$dir/$port" or next;

        if (!flock $lock, LOCK_EX | LOCK_NB) {
            close $lock;
            next;
        }

        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => $port,
            Proto     => 'tcp',
            ReuseAddr => 1,
            Listen    => 1,
        );

        if (!$s) {
            close $lock;
            next;
        }

        close $s;
        push @Port_locks, $lock;

        return $port;
    }

    die "Test::Hookstream: no free port in $lo-$hi\n";
}

# True once something accepts connections on 127.0.0.1:$port.
sub wait_for_port {
    my ($port, $timeout) = @_;

    my $deadline = time + ($timeout // 5);

    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port,
                                      Proto    => 'tcp',
                                      Timeout  => 1);
        if ($s) {
            close $s;
            return 1;
        }

        sleep 0.05;
    }

    return 0;
}

# wait_until(sub { ... }, $timeout = 5, $interval = 0.05): the first true
# value the sub returns, or undef when the time runs out.
sub wait_until {
    my ($cond, $timeout, $interval) = @_;

    my $deadline = time + ($timeout // 5);

    for (;;) {
        my $v = $cond->();
        return $v if $v;
        return undef if time >= $deadline;
        sleep($interval // 0.05);
    }
}

# start_process(\@cmd, wait_port => $p, timeout => 5, log => $file): a
# helper server (a mock backend, a reference WebSocket server) run for
# this file; killed by stop_process or at the end. Returns its pid, or
# undef when it did not come up.
sub start_process {
    my ($cmd, %o) = @_;

    _init_env();

    my $log = $o{log} // "$Env{prefix}/logs/process-"
                         . basename($cmd->[0]) . ".log";

    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec { $cmd->[0] } @$cmd or POSIX::_exit(127);
    }

    $Processes{$pid} = $cmd;

    if (defined $o{wait_port}) {
        my $deadline = time + ($o{timeout} // 5);
        my $up = 0;

        while (time < $deadline) {
            if (waitpid($pid, WNOHANG) == $pid) {
                delete $Processes{$pid};
                Test::More::diag("@$cmd exited early:\n"
                                 . _slurp_from($log, 0));
                return undef;
            }

            if (wait_for_port($o{wait_port}, 0.2)) {
                $up = 1;
                last;
            }
        }

        if (!$up) {
            stop_process($pid);
            Test::More::diag("@$cmd did not listen on port "
                             . "$o{wait_port}:\n" . _slurp_from($log, 0));
            return undef;
        }
    }

    return $pid;
}

sub stop_process {
    my ($pid) = @_;

    return if !$pid || !$Processes{$pid};

    kill 'TERM', $pid;

    my $deadline = time + 3;

    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) != 0) {
            delete $Processes{$pid};
            return;
        }

        sleep 0.02;
    }

    kill 'KILL', $pid;
    waitpid $pid, 0;
    delete $Processes{$pid};
}

# ---------------------------------------------------------------------------
# processes seen through /proc

sub _proc_stat {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/stat" or return;
    my $s = <$fh> // return;

    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    return if $s !~ /\)\s+(\S)\s+(\d+)/s;

    return ($1, $2);
}

sub _alive {
    my ($pid) = @_;

    return 0 if !$pid;

    my ($state) = _proc_stat($pid);

    return defined $state && $state ne 'Z' && $state ne 'X' ? 1 : 0;
}

sub _children {
    my ($ppid) = @_;

    my @pids;

    opendir my $dh, '/proc' or return;

    for my $p (readdir $dh) {
        next if $p !~ /^\d+$/;
        my ($state, $pp) = _proc_stat($p);
        next if !defined $state || $pp != $ppid;
        next if $state eq 'Z' || $state eq 'X';
        push @pids, $p;
    }

    return sort { $a <=> $b } @pids;
}

sub _cmdline {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $s = <$fh> // '';
    $s =~ s/\0+/ /g;

    return $s;
}

sub _wait_gone {
    my ($pids, $timeout) = @_;

    my $deadline = time + $timeout;

    for (;;) {
        my @left = grep { _alive($_) } @$pids;
        return 1 if !@left;
        return 0 if time >= $deadline;
        sleep 0.02;
    }
}

sub _read_pid {
    my $file = "$Env{prefix}/logs/nginx.pid";

    open my $fh, '<', $file or return undef;
    my $pid = <$fh>;

    return defined $pid && $pid =~ /^(\d+)/ ? $1 : undef;
}

sub master_pid {
    my $pid = $Run{master_pid};
    return _alive($pid) ? $pid : undef;
}

sub nginx_running {
    return master_pid() ? 1 : 0;
}

# worker_pids(): the master's current workers (cache processes and old
# workers still shutting down after a reload excluded); worker_pids(all =>
# 1) includes the old ones.  A process that is exiting has an empty
# cmdline for a moment (a slow exit under a sanitizer makes it a long
# one): only a title naming a worker process counts.
sub worker_pids {
    my (%o) = @_;

    my $m = master_pid() or return;

    return grep {
        my $t = _cmdline($_);
        $t =~ /worker process/ && ($o{all} || $t !~ /shutting down/);
    } _children($m);
}

# how many workers to wait for ("auto" and the like: at least one)
sub _want_workers {
    my $w = $Run{sections}{workers} // $Opt{workers};
    return $w =~ /^\d+$/ ? $w : 1;
}

sub signal_nginx {
    my ($sig) = @_;
    my $m = master_pid() or return 0;
    return kill $sig, $m;
}

# kill_worker($pid, $sig = 'KILL'): the worker ends and the master
# starts a replacement; returns the new worker list. The master logs the
# death at [alert] when the signal is not a graceful one: such blocks
# name that line in --- allow_error_log.
sub kill_worker {
    my ($pid, $sig) = @_;

    my @before = worker_pids();
    $pid //= $before[0];

    return if !$pid;

    kill $sig // 'KILL', $pid;
    _wait_gone([$pid], 5);

    my $want = scalar @before;

    my $ok = wait_until(sub {
        my @w = worker_pids();
        return @w >= $want && !grep { $_ == $pid } @w;
    }, 5);

    sleep 0.1;

    return worker_pids();
}

# kill_nginx($sig = 'KILL'): the master and its workers, at once
sub kill_nginx {
    my ($sig) = @_;

    $sig //= 'KILL';

    my $m = $Run{master_pid} or return 0;
    my @all = ($m, _children($m));

    kill $sig, @all;
    _wait_gone(\@all, 5);

    if ($sig eq 'KILL' || $sig eq '9') {
        unlink "$Env{prefix}/logs/nginx.pid";
        $Run{master_pid} = undef;
    }

    return 1;
}

# ---------------------------------------------------------------------------
# the configuration

sub _conf_text {
    my (%s) = @_;

    my $module = $s{no_module} ? undef : module_path();
    my $workers = $s{workers} // $Opt{workers};

    my $conf = "# generated by Test::Hookstream for $0\n"
               . "# $Run{name}\n\n";

    $conf .= "load_module $module;\n\n" if $module;

    if ($> == 0) {
        my $user = getpwuid($>) // 'root';
        my ($gid) = split ' ', $);
        my $group = getgrgid($gid) // $user;
        $conf .= "user $user $group;\n";
    }

    my $port = $s{port} // $Env{port};
    my $tls_port = $s{tls_port} // $Env{tls_port};
    my $daemon = $s{daemon} // 'on';

    $conf .= "worker_processes $workers;\n";
    $conf .= "worker_rlimit_nofile $Env{nofile};\n" if $Env{nofile};
    $conf .= "daemon $daemon;\n"
             . "master_process on;\n"
             . "error_log logs/error.log $Opt{log_level};\n"
             . "pid logs/nginx.pid;\n"
             . "lock_file logs/nginx.lock;\n\n";

    $conf .= subst_vars($s{main_config} // '') . "\n";

    $conf .= "events {\n"
             . "    worker_connections $Env{connections};\n"
             . subst_vars($s{events_config} // '') . "\n"
             . "}\n\n";

    $conf .= <<"EOF";
http {
    access_log logs/access.log;

    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;

EOF

    $conf .= subst_vars($s{http_config} // '') . "\n";

    $conf .= <<"EOF";
    server {
        listen 127.0.0.1:$port;
        listen 127.0.0.1:$tls_port ssl;
        server_name localhost;

        ssl_certificate $Env{cert};
        ssl_certificate_key $Env{key};

EOF

    $conf .= subst_vars($s{config} // '') . "\n";
    $conf .= "    }\n}\n";

    return $conf;
}

sub _write_conf {
    my $text = _conf_text(%{ $Run{sections} });
    my $path = "$Env{prefix}/conf/nginx.conf";

    open my $fh, '>', $path or die "open $path: $!\n";
    print {$fh} $text;
    close $fh or die "write $path: $!\n";

    # a copy per block, for HOOKSTREAM_KEEP=1 post-mortems
    if (defined $Run{seq}) {
        if (open my $c, '>', "$Env{prefix}/conf/block-$Run{seq}.conf") {
            print {$c} $text;
            close $c;
        }
    }

    return $path;
}

sub _sanitizer_env {
    return () if !$ENV{HOOKSTREAM_ASAN};

    my @libs;

    for my $lib (qw(libasan.so libubsan.so)) {
        my $p = `gcc -print-file-name=$lib 2>/dev/null` // '';
        chomp $p;
        push @libs, $p if $p =~ m{/} && -e $p;
    }

    my $logs = "$Env{prefix}/logs";

    return (
        LD_PRELOAD   => join(':', @libs, grep { defined && length }
                                         $ENV{LD_PRELOAD}),
        ASAN_OPTIONS => "detect_leaks=0:log_path=$logs/asan"
                        . ":abort_on_error=0",
        UBSAN_OPTIONS => "print_stacktrace=1:log_path=$logs/ubsan",
    );
}

# nginx_cmd(@args): run the nginx binary with this file's prefix and
# configuration (e.g. nginx_cmd('-t')); returns ($exit_code, $output).
sub nginx_cmd {
    my (@args) = @_;

    _init_env();

    my $out = "$Env{prefix}/logs/nginx-cmd.out";
    unlink $out;

    my $bin = _nginx_bin();
    my %san = _sanitizer_env();

    my $pid = fork // die "fork: $!";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        @ENV{keys %san} = values %san;
        exec { $bin } $bin, '-p', "$Env{prefix}/", '-c', 'conf/nginx.conf',
                      @args
            or POSIX::_exit(127);
    }

    my $deadline = time + 20;
    my $done = 0;

    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $done = 1;
            last;
        }

        sleep 0.01;
    }

    if (!$done) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        return (-1, _slurp_from($out, 0) . "\n(nginx @args hung)\n");
    }

    return ($? >> 8, _slurp_from($out, 0));
}

# start_instance($name, %sections): another nginx of this file, with its
# own prefix (<root>/instance-<name>), ports and configuration, made from
# the sections given (config, http_config, main_config, events_config,
# workers; the current block's by default) the way the test server's is.
# It runs in the foreground under start_process, so it is stopped at the
# end at the latest; its error log is checked like the test server's.
# Returns { name, port, tls_port, prefix, pid, error_log }, or undef if it
# did not start.
sub start_instance {
    my ($name, %s) = @_;

    _init_env();

    die "start_instance: bad name '$name'\n" if $name !~ /^[a-z0-9_-]+$/;

    stop_instance($Instances{$name}) if $Instances{$name};

    my $prefix = "$Env{prefix}/instance-$name";

    for my $d (qw(conf logs html data tmp)) {
        make_path("$prefix/$d");
    }

    my %sec = (%{ $Run{sections} }, %s);
    $sec{port} = free_port();
    $sec{tls_port} = free_port();
    $sec{daemon} = 'off';

    my $conf = _conf_text(%sec);

    open my $fh, '>', "$prefix/conf/nginx.conf"
        or die "open $prefix/conf/nginx.conf: $!\n";
    print {$fh} $conf;
    close $fh or die "write $prefix/conf/nginx.conf: $!\n";

    my %san = _sanitizer_env();
    local @ENV{keys %san} = values %san;

    my $pid = start_process([_nginx_bin(), '-p', "$prefix/", '-c',
                             'conf/nginx.conf'],
                            wait_port => $sec{port},
                            log => "$prefix/logs/stderr.log");

    return undef if !$pid;

    my $inst = {
        name      => $name,
        port      => $sec{port},
        tls_port  => $sec{tls_port},
        prefix    => $prefix,
        pid       => $pid,
        error_log => "$prefix/logs/error.log",
    };

    $Instances{$name} = $inst;

    return $inst;
}

# stop_instance($inst): a fast stop (TERM) of an instance
sub stop_instance {
    my ($inst) = @_;

    return if !$inst || !$Instances{$inst->{name}};

    stop_process($inst->{pid});
    $inst->{stopped} = 1;
}

# start_nginx(): start the server on the current configuration; returns
# true once the master and its workers run. Its output goes to the
# block's log text.
sub start_nginx {
    _init_env();

    if (master_pid()) {
        return 1;
    }

    unlink "$Env{prefix}/logs/nginx.pid";

    my ($rc, $out) = nginx_cmd();

    $Run{out_text} .= $out;

    if ($rc != 0) {
        $Run{start_error} = "nginx exited with code $rc";
        return 0;
    }

    my $pid = wait_until(sub { _read_pid() }, 5, 0.01);

    if (!$pid) {
        $Run{start_error} = 'nginx wrote no pid file';
        return 0;
    }

    $Run{master_pid} = $pid;

    my $want = _want_workers();

    my $ok = wait_until(sub {
        return -1 if !_alive($pid);
        return scalar(worker_pids()) >= $want;
    }, 5, 0.01);

    if (!$ok || !_alive($pid)) {
        $Run{start_error} = _alive($pid)
                            ? 'nginx workers did not start'
                            : 'nginx master exited after starting';
        kill_nginx('KILL') if _alive($pid);
        $Run{master_pid} = undef;
        return 0;
    }

    $Run{start_error} = undef;

    return 1;
}

# stop_nginx(): graceful stop (QUIT); TERM, then KILL, when it takes more
# than the stop timeout. True when the server quit gracefully.
sub stop_nginx {
    my $pid = $Run{master_pid};

    return 1 if !$pid;

    if (!_alive($pid)) {
        $Run{master_pid} = undef;
        return 1;
    }

    my @all = ($pid, _children($pid));

    kill 'QUIT', $pid;

    my $graceful = _wait_gone(\@all, $Opt{stop_timeout});

    if (!$graceful) {
        Test::More::diag("nginx did not quit within $Opt{stop_timeout}s "
                         . "of SIGQUIT; sending SIGTERM");

        @all = ($pid, _children($pid));
        kill 'TERM', @all;

        if (!_wait_gone(\@all, 3)) {
            @all = ($pid, _children($pid));
            kill 'KILL', @all;
            _wait_gone(\@all, 3);
        }
    }

    unlink "$Env{prefix}/logs/nginx.pid";
    $Run{master_pid} = undef;

    return $graceful;
}

sub _apply_overrides {
    my (%over) = @_;

    return if !%over;

    for my $k (keys %over) {
        $Run{sections}{$k} = $over{$k};
    }

    _write_conf();
}

# restart_nginx(%sections): stop, optionally rewrite the configuration
# (main_config, http_config, config, events_config, workers), start.
sub restart_nginx {
    my (%over) = @_;

    stop_nginx();
    _apply_overrides(%over);

    return start_nginx();
}

# reload_nginx(%sections): optionally rewrite the configuration, send
# SIGHUP, and wait (bounded) for the new generation of workers. False
# when nginx rejected the configuration or no new workers came.
sub reload_nginx {
    my (%over) = @_;

    _apply_overrides(%over);

    my $m = master_pid() or return 0;

    my %old = map { $_ => 1 } worker_pids();
    my $off = -s error_log_path() // 0;
    my $want = _want_workers();

    kill 'HUP', $m;

    # done when the new generation runs and the old one is gone or
    # shutting down (it may linger while it has connections to finish)
    my $ok = wait_until(sub {
        my $log = _slurp_from(error_log_path(), $off);
        return -1 if $log =~ /\[emerg\]/;
        my @now = worker_pids();
        my @new = grep { !$old{$_} } @now;
        return @new >= $want && @new == @now ? 1 : 0;
    }, 10, 0.02);

    return 0 if !$ok || $ok == -1;

    # give the new workers a moment to finish their init_process
    sleep 0.1;

    return 1;
}

# ---------------------------------------------------------------------------
# clients bound to the server of the block

sub _target {
    my (%o) = @_;

    if (defined $o{port}) {
        return ($o{port}, $o{tls} // 0);
    }

    my $tls = $o{tls} // $Run{tls};

    return ($tls ? tls_port() : server_port(), $tls ? 1 : 0);
}

# ws_connect($path, %opt): a Test::Hookstream::WS to this server; on the
# TLS pass of a block it connects to the TLS port over TLS.
sub ws_connect {
    my ($path, %o) = @_;

    my ($port, $tls) = _target(%o);

    return Test::Hookstream::WS->connect(subst_vars($path),
                                         %o, port => $port, tls => $tls);
}

# http_request($method, $uri, %opt): body, headers, tls, port, timeout,
# http_version, raw; returns a Test::Hookstream::Response.
sub http_request {
    my ($method, $uri, %o) = @_;

    my ($port, $tls) = _target(%o);

    return Test::Hookstream::HTTP::http_request(
        %o,
        method => $method,
        uri    => subst_vars($uri),
        port   => $port,
        tls    => $tls,
    );
}

sub http_get {
    my ($uri, %o) = @_;
    return http_request('GET', $uri, %o);
}

sub http_post {
    my ($uri, $body, %o) = @_;
    return http_request('POST', $uri, %o, body => $body);
}

# ---------------------------------------------------------------------------
# hookstream fixtures

sub random_hex {
    my ($n) = @_;
    $n //= 32;
    return join '', map { sprintf '%x', int rand 16 } 1 .. $n;
}

# make_api_key('live' | 'test'): a fresh hs_live_/hs_test_ key
sub make_api_key {
    my ($kind) = @_;
    return 'hs_' . ($kind // 'live') . '_' . random_hex(64);
}

# directory_json({ org_<hex> => { api_keys => [raw keys], sessions =>
# [raw tokens], sources => [ids] } }): the hookstream_directory file
# text, with keys and session tokens stored as their SHA-256.
sub directory_json {
    my ($orgs) = @_;

    my %out;

    for my $org (keys %$orgs) {
        my $o = $orgs->{$org};
        my %e = %$o;

        for my $k (qw(api_keys sessions)) {
            next if !$o->{$k};
            $e{$k} = [map { /^sha256:/ ? $_ : 'sha256:' . sha256_hex($_) }
                      @{ $o->{$k} }];
        }

        $e{sources} //= [];
        $out{$org} = \%e;
    }

    return $JSON->encode({ orgs => \%out });
}

sub encode_json { $JSON->encode($_[0]) }
sub decode_json { $JSON->decode($_[0]) }

# json_match($got, $want): where a decoded JSON value differs from a
# pattern, as a list of "path: why" strings (empty when it matches). In
# the pattern a qr// matches a string or number, a hash lists the keys
# to check (others are not checked), an array must match element by
# element, undef means null or absent, and code refs get the value.
sub json_match {
    my ($got, $want, $path) = @_;

    $path //= '$';

    if (ref $want eq 'Regexp') {
        return "$path: " . _show($got) . " does not match $want"
            if !defined $got || ref $got || $got !~ $want;
        return ();
    }

    if (ref $want eq 'CODE') {
        return $want->($got) ? () : ("$path: " . _show($got)
                                     . " rejected by the check");
    }

    if (ref $want eq 'HASH') {
        return "$path: " . _show($got) . " is not an object"
            if ref $got ne 'HASH';
        return map { json_match($got->{$_}, $want->{$_}, "$path.$_") }
               sort keys %$want;
    }

    if (ref $want eq 'ARRAY') {
        return "$path: " . _show($got) . " is not an array"
            if ref $got ne 'ARRAY';
        return "$path: " . scalar(@$got) . " elements, want "
               . scalar(@$want) if @$got != @$want;
        return map { json_match($got->[$_], $want->[$_], "$path\[$_]") }
               0 .. $#$want;
    }

    if (!defined $want) {
        return defined $got ? ("$path: " . _show($got) . ", want null")
                            : ();
    }

    if (JSON::PP::is_bool($want)) {
        return (JSON::PP::is_bool($got) && !!$got == !!$want) ? ()
               : ("$path: " . _show($got) . ", want "
                  . ($want ? 'true' : 'false'));
    }

    return "$path: " . _show($got) . ", want " . _show($want)
        if !defined $got || ref $got || "$got" ne "$want";

    return ();
}

sub _show {
    my ($v) = @_;
    return 'absent/null' if !defined $v;
    return JSON::PP::is_bool($v) ? ($v ? 'true' : 'false') : "'$v'"
        if !ref $v || JSON::PP::is_bool($v);
    my $t = eval { JSON::PP->new->canonical->allow_nonref
                   ->allow_blessed->encode($v) } // "$v";
    return length $t > 200 ? substr($t, 0, 200) . '...' : $t;
}

# json_ok($got, $want, $name): one test of json_match
sub json_ok {
    my ($got, $want, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my @diff = json_match($got, $want);

    Test::More::ok(!@diff, $name) or Test::More::diag(join "\n", @diff);

    return !@diff;
}

# ---------------------------------------------------------------------------
# running the blocks

sub _has {
    my ($block, $sec) = @_;
    return exists $block->{$sec};
}

sub _val {
    my ($block, $sec) = @_;
    return undef if !exists $block->{$sec};
    my @v = @{ $block->{$sec} };
    return @v == 1 ? $v[0] : \@v;
}

sub _is_eval {
    my ($block, $sec) = @_;
    my $f = $block->{_section_map}[0]{$sec}{filters} // '';
    return $f =~ /\beval\b/;
}

# lines of a section, or the items of an eval'd one (strings, regexes)
sub _patterns {
    my ($v) = @_;

    return () if !defined $v;
    return map { _patterns($_) } @$v if ref $v eq 'ARRAY';
    return $v if ref $v eq 'Regexp';

    return map { subst_vars($_) } grep { /\S/ } split /\n/, $v;
}

sub _pat_text {
    my ($p) = @_;
    return ref $p eq 'Regexp' ? "$p" : "'$p'";
}

sub _matches {
    my ($p, $line) = @_;
    return ref $p eq 'Regexp' ? $line =~ $p : index($line, $p) >= 0;
}

sub _user_files {
    my ($v) = @_;

    my @files;

    if (ref $v eq 'HASH') {
        @files = map { [$_, $v->{$_}] } sort keys %$v;

    } elsif (ref $v eq 'ARRAY') {
        @files = map { ref $_ eq 'ARRAY' ? $_ : () } @$v;

        if (!@files) {
            my @flat = @$v;
            push @files, [splice @flat, 0, 2] while @flat;
        }

    } else {
        my $cur;

        for my $line (split /^/, $v // '') {
            if ($line =~ /^>>> (\S+)/) {
                push @files, $cur = [$1, ''];
                next;
            }

            die "user_files: content before the first '>>> name' line\n"
                if !$cur && $line =~ /\S/;

            $cur->[1] .= $line if $cur;
        }
    }

    for my $f (@files) {
        write_data_file($f->[0], subst_vars($f->[1]));
    }
}

sub _reset_data_dir {
    my $d = data_dir();
    remove_tree($d);
    make_path($d);
}

sub _log_offsets {
    $Run{log_off} = -s error_log_path() // 0;
    $Run{acc_off} = -s access_log_path() // 0;
    $Run{out_text} = '';

    # sanitizer reports written before this block belong to earlier blocks
    for my $f (_sanitizer_files()) {
        $Run{san_off}{$f} = -s $f // 0;
    }
}

sub _sanitizer_files {
    my $logs = "$Env{prefix}/logs";

    opendir my $dh, $logs or return;

    return map { "$logs/$_" } sort grep { /^(?:asan|ubsan)/ } readdir $dh;
}

sub _sanitizer_reports {
    my @r;

    for my $f (_sanitizer_files()) {
        my $text = _slurp_from($f, $Run{san_off}{$f} // 0);
        $Run{san_off}{$f} = -s $f // 0;
        push @r, basename($f) . ":\n$text" if $text =~ /\S/;
    }

    return @r;
}

sub _log_tail {
    my ($text, $n) = @_;
    my @l = split /\n/, $text;
    @l = grep { !/\[debug\]/ } @l if @l > $n;
    splice @l, 0, @l - $n if @l > $n;
    return join "\n", @l;
}

sub run_tests {
    my $tb = Test::Builder->new;
    my $planned = $tb->has_plan;

    # an argument-less plan() marks "planned" for Test::Base (whose END
    # would otherwise run its own comparisons) and does nothing else
    $tb->plan if !$planned;

    _init_env();

    my $seq = 0;

    for my $block (Test::Base::blocks()) {
        for my $rep (1 .. $Opt{repeat}) {
            $Run{seq} = ++$seq;
            _run_block($block, $rep);
        }
    }

    _teardown();

    Test::More::done_testing() if !$planned;
}

sub _run_block {
    my ($block, $rep) = @_;

    my $name = $block->name;
    $name .= " (repeat $rep)" if $rep > 1;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    $Run{block} = $block;
    $Run{name} = $name;
    $Run{tls} = 0;

    stop_nginx();

    my %sections;

    for my $s (qw(main_config http_config config events_config workers)) {
        $sections{$s} = _val($block, $s) if _has($block, $s);
    }

    $sections{no_module} = 1 if _has($block, 'no_module');
    $sections{workers} =~ s/\s+//g if defined $sections{workers};

    $Run{sections} = \%sections;

    _reset_data_dir();
    _user_files(_val($block, 'user_files')) if _has($block, 'user_files');
    _write_conf();
    _log_offsets();

    my $started = start_nginx();

    if (_has($block, 'must_die')) {
        if ($started) {
            Test::More::fail("$name - nginx should have refused to start");
            stop_nginx();

        } else {
            Test::More::pass("$name - nginx refused to start");
        }

        _check_logs($block, $name);
        return;
    }

    if (!$started) {
        Test::More::fail("$name - nginx started");
        Test::More::diag(($Run{start_error} // '') . "\n"
                         . $Run{out_text}
                         . _log_tail(error_log_text(), 30));
        stop_nginx();
        _check_logs($block, $name, no_patterns => 1);
        return;
    }

    my @passes = (0);
    push @passes, 1 if _has($block, 'tls');

    if (_has($block, 'request') || _has($block, 'raw_request')) {
        for my $tls (@passes) {
            local $Run{tls} = $tls;
            _run_request($block, $name . ($tls ? ' (tls)' : ''));
        }
    }

    if (_has($block, 'ws')) {
        my @ws = @passes;
        push @ws, 1 if _has($block, 'ws_tls') && !_has($block, 'tls');

        for my $tls (@ws) {
            local $Run{tls} = $tls;
            _run_snippet($block, $name . ($tls ? ' (tls)' : ''),
                         _val($block, 'ws'));
        }

    } elsif (_has($block, 'ws_tls')) {
        local $Run{tls} = 1;
        _run_snippet($block, "$name (tls)", _val($block, 'ws_tls'));
    }

    if (_has($block, 'wait')) {
        my $w = _val($block, 'wait') // 0;
        $w =~ s/\s+//g;
        sleep $w if $w =~ /^[\d.]+$/ && $w > 0;
    }

    stop_nginx();

    _check_logs($block, $name);
}

sub _run_request {
    my ($block, $name) = @_;

    my $timeout = _val($block, 'timeout') // 5;
    $timeout =~ s/\s+//g;

    my $r;

    if (_has($block, 'raw_request')) {
        my $raw = _subst_deep(_val($block, 'raw_request'));
        my $delay = _val($block, 'raw_request_delay');

        $r = http_request(undef, '/', raw => $raw, timeout => $timeout,
                          defined $delay ? (chunk_delay => $delay) : ());

    } else {
        my $req = _val($block, 'request') // '';
        $req =~ s/\A\s+//;

        my ($line, $body) = split /\n/, $req, 2;
        $line =~ s/\s+\z//;

        if (defined $body && !_is_eval($block, 'request')) {
            $body =~ s/\n\z//;
        }

        $body = undef if defined $body && $body eq '';

        my ($method, $uri, $proto) = split ' ', subst_vars($line);
        my $version = '1.1';
        $version = $1 if defined $proto && $proto =~ m{^HTTP/(\d\.\d)$};

        my @headers;

        if (_has($block, 'more_headers')) {
            @headers = Test::Hookstream::HTTP::_header_pairs(
                           subst_vars(_val($block, 'more_headers')));
        }

        $r = http_request($method, $uri // '/',
                          headers      => \@headers,
                          body         => defined $body
                                          ? subst_vars($body) : undef,
                          http_version => $version,
                          timeout      => $timeout);
    }

    $Run{last_response} = $r;

    if (!defined $r->status) {
        Test::More::diag("$name - no response: " . ($r->error // '?'));
    }

    if (_has($block, 'error_code')) {
        my $want = _val($block, 'error_code');
        $want =~ s/\s+//g;

        Test::More::is($r->status, $want, "$name - status code ok")
            or Test::More::diag($r->dump);
    }

    if (_has($block, 'response_headers')) {
        _check_headers($r, $name, _val($block, 'response_headers'), 0);
    }

    if (_has($block, 'response_headers_like')) {
        _check_headers($r, $name, _val($block, 'response_headers_like'), 1);
    }

    if (_has($block, 'response_body')) {
        my $want = subst_vars(_val($block, 'response_body') // '');
        Test::More::is($r->body, $want, "$name - response_body ok");
    }

    if (_has($block, 'response_body_like')) {
        my $want = _val($block, 'response_body_like');
        $want = subst_vars($want) if !ref $want;
        $want =~ s/\n\z// if !ref $want;
        my $re = ref $want eq 'Regexp' ? $want : qr/$want/s;

        Test::More::like($r->body // '', $re,
                         "$name - response_body_like ok");
    }

    if (_has($block, 'response_json')) {
        my $want = _val($block, 'response_json');

        if (!ref $want) {
            $want = eval { decode_json(subst_vars($want)) };

            if (!defined $want) {
                Test::More::fail("$name - response_json section is not "
                                 . "JSON (use eval for patterns)");
                return;
            }
        }

        my $got = $r->json;

        if (!defined $got) {
            Test::More::fail("$name - response_json ok");
            Test::More::diag("body is not JSON: " . ($r->body // ''));

        } else {
            json_ok($got, _subst_deep($want), "$name - response_json ok");
        }
    }
}

sub _check_headers {
    my ($r, $name, $spec, $like) = @_;

    my @checks;

    if (ref $spec eq 'HASH') {
        @checks = map { [$_, $spec->{$_}] } sort keys %$spec;

    } else {
        for my $line (split /\n/, subst_vars($spec // '')) {
            next if $line !~ /\S/;

            if ($line =~ /^\s*!\s*([^:\s]+)\s*$/) {
                push @checks, [$1, undef];

            } elsif ($line =~ /^\s*([^:\s]+)\s*:\s?(.*?)\s*$/) {
                push @checks, [$1, $2];

            } else {
                Test::More::fail("$name - bad response_headers line "
                                 . "'$line'");
            }
        }
    }

    for my $c (@checks) {
        my ($h, $want) = @$c;
        my $got = $r->header($h);

        if (!defined $want) {
            Test::More::ok(!defined $got, "$name - header $h absent")
                or Test::More::diag("$h: $got");

        } elsif ($like) {
            my $re = ref $want eq 'Regexp' ? $want : qr/$want/;
            Test::More::like($got // '', $re, "$name - header $h like");

        } else {
            Test::More::is($got, $want, "$name - header $h ok");
        }
    }
}

# Snippets are compiled in package main, so that the subs of the .t file
# are theirs to call. What they need and main lacks is brought in here,
# once, before the first snippet is compiled; names the .t file defines
# itself are left alone. (Assigned from this package, sleep and time count
# as imported and override the builtins in the snippets.)
sub _prepare_main {
    return if $Run{main_ready}++;

    no strict 'refs';

    my %src = map { $_ => "Test::Hookstream::$_" } @SNIPPET_HELPERS;

    $src{$_} = "Test::More::$_" for grep { /^\w/ } @Test::More::EXPORT;
    $src{$_} = "Test::Hookstream::WS::$_"
        for @{ $Test::Hookstream::WS::EXPORT_TAGS{opcodes} };
    $src{$_} = "Time::HiRes::$_" for qw(sleep time);

    for my $name (sort keys %src) {
        next if defined &{"main::$name"};
        *{"main::$name"} = \&{ $src{$name} };
    }
}

sub _run_snippet {
    my ($block, $name, $code) = @_;

    $code = subst_vars($code // '');

    (my $file = $name) =~ s/["\n]/ /g;

    _prepare_main();

    my $src = "package main;\n"
              . "use strict;\nuse warnings;\n"
              . "sub {\n#line 1 \"$file (ws)\"\n$code\n;\n}\n";

    my $sub = eval $src;

    if (!$sub) {
        Test::More::fail("$name - ws snippet compiles");
        Test::More::diag($@);
        return;
    }

    Test::More::note("$name - ws snippet" . ($Run{tls} ? ' over TLS' : ''));

    my $limit = $Opt{ws_timeout};

    # assertions in the snippet report the snippet's own lines
    local $Test::Builder::Level = 1;

    my $ok = eval {
        local $SIG{ALRM} = sub { die "timed out after ${limit}s\n" };
        alarm $limit;
        $sub->();
        alarm 0;
        1;
    };

    alarm 0;

    if (!$ok) {
        my $err = $@ || 'unknown error';
        Test::More::fail("$name - ws snippet ran to its end");
        Test::More::diag("died: $err");
    }
}

sub _check_logs {
    my ($block, $name, %o) = @_;

    my $text = $Run{out_text} . error_log_text();

    # other instances: what they logged since the last check
    for my $inst (values %Instances) {
        my $f = $inst->{error_log};
        $text .= _slurp_from($f, $inst->{log_off} // 0);
        $inst->{log_off} = -s $f // 0;
    }

    my @lines = split /\n/, $text;

    if (!$o{no_patterns}) {
        for my $p (_patterns(_val($block, 'error_log'))) {
            my $found = grep { _matches($p, $_) } @lines;
            Test::More::ok($found, "$name - error log has "
                                   . _pat_text($p));
        }

        for my $p (_patterns(_val($block, 'no_error_log'))) {
            my @hits = grep { _matches($p, $_) } @lines;
            Test::More::ok(!@hits, "$name - error log lacks "
                                   . _pat_text($p))
                or Test::More::diag(join "\n", @hits[0 .. $#hits > 9
                                                         ? 9 : $#hits]);
        }

        my @acc = split /\n/, access_log_text();

        for my $p (_patterns(_val($block, 'access_log'))) {
            my $found = grep { _matches($p, $_) } @acc;
            Test::More::ok($found, "$name - access log has "
                                   . _pat_text($p));
        }

        for my $p (_patterns(_val($block, 'no_access_log'))) {
            my @hits = grep { _matches($p, $_) } @acc;
            Test::More::ok(!@hits, "$name - access log lacks "
                                   . _pat_text($p))
                or Test::More::diag(join "\n", @hits);
        }
    }

    # the check every block gets: no bug reports of ours or nginx's
    my $levels = _has($block, 'must_die') ? qr/\[(?:alert|crit)\]/
                                          : qr/\[(?:alert|crit|emerg)\]/;
    my @allowed = _patterns(_val($block, 'allow_error_log'));

    my @bad = grep {
        my $l = $_;
        ($l =~ $levels
         || $l =~ /ERROR: AddressSanitizer|runtime error:|LeakSanitizer/)
        && !grep { _matches($_, $l) } @allowed;
    } @lines;

    push @bad, _sanitizer_reports();

    Test::More::ok(!@bad, "$name - no [alert], [crit], [emerg] or "
                          . "sanitizer report")
        or Test::More::diag(join "\n", @bad[0 .. ($#bad > 19 ? 19 : $#bad)]);
}

sub _teardown {
    return if !$Env{init} || !$Env{prefix} || $Env{torn}
              || $$ != $Env{pid};

    $Env{torn} = 1;

    local ($?, $!, $@);

    stop_nginx() if $Run{master_pid};

    stop_process($_) for keys %Processes;

    if ($ENV{HOOKSTREAM_KEEP}) {
        if (open my $fh, '>', "$Env{prefix}/KEPT") {
            close $fh;
        }

        Test::More::diag("HOOKSTREAM_KEEP: server root kept at "
                         . "$Env{prefix}");

    } else {
        remove_tree($Env{prefix});
    }
}

END {
    local $?;
    _teardown();
}


package Test::Hookstream::Filter;

# Test::Base's eval filter returns the error text as the section's value
# when the code does not compile; this one fails loudly, and substitutes
# $TEST_NGINX_* names in the code first.

use strict;
use warnings;

require Test::Base::Filter;

our @ISA = ('Test::Base::Filter');

sub eval {
    my ($self, @v) = @_;

    $self->assert_scalar(@v);

    my $code = Test::Hookstream::subst_vars(shift @v);
    my $block = $self->current_block;
    my $where = $block ? $block->name : 'a block';
    $where =~ s/["\n]/ /g;

    my @r = CORE::eval("package main;\nno strict 'vars';\n"
                       . "#line 1 \"$where (eval section)\"\n$code");

    die "eval section of $where failed: $@" if $@;

    return @r;
}


1;
