# bench/plots.gp: the PNGs of a bench/run.sh report. run.sh writes the
# data files into `data` (a directory) and calls
#
#   gnuplot -e "data='DIR'; out='PREFIX'; title='TEXT'; lat=1; mem=1" \
#       bench/plots.gp
#
# which writes PREFIX-throughput.png, PREFIX-latency.png (lat=1) and
# PREFIX-memory.png (mem=1). Each data line: a quoted label, then for each server
# the median, the lowest and the highest run.

set terminal pngcairo size 1100,560 font "DejaVu Sans,11" noenhanced
set style data histogram
set style histogram errorbars gap 2 lw 1.5
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror scale 0
set ytics nomirror
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set bmargin 5

ours   = "#2b6cb0"
dir    = "#63b3ed"
theirs = "#dd6b20"
plain  = "#718096"

# -- throughput: messages out, and connects ---------------------------------

set output out . "-throughput.png"
set multiplot layout 1, 2 title title . ": throughput (median of the runs, bars from the lowest to the highest)"

set title "delivered messages/s, 200-byte messages"
set ylabel "thousand messages/s"
set format y "%.0f"
plot data . "/throughput.dat" \
         using ($2/1000):($3/1000):($4/1000):xtic(1) title "hookstream" lc rgb ours, \
      '' using ($5/1000):($6/1000):($7/1000) title "nchan" lc rgb theirs, \
      '' using ($0 - 0.125):($4/1000):(sprintf("%.0fk", $2/1000)) with labels offset 0,0.7 notitle, \
      '' using ($0 + 0.125):($7/1000):(sprintf("%.0fk", $5/1000)) with labels offset 0,0.7 notitle

set offsets 0, 0, graph 0.3, 0
set title "connection churn: connect, handshake, first frame, close"
set ylabel "thousand connects/s"
set format y "%.1f"
plot data . "/churn.dat" \
         using ($2/1000):($3/1000):($4/1000):xtic(1) title "hookstream, key in the auth cache" lc rgb ours, \
      '' using ($5/1000):($6/1000):($7/1000) title "hookstream, key in the directory" lc rgb dir, \
      '' using ($8/1000):($9/1000):($10/1000) title "nchan (no credential)" lc rgb theirs, \
      '' using ($0 - 0.2):($4/1000):(sprintf("%.1fk", $2/1000)) with labels offset 0,0.7 notitle, \
      '' using 0:($7/1000):(sprintf("%.1fk", $5/1000)) with labels offset 0,0.7 notitle, \
      '' using ($0 + 0.2):($10/1000):(sprintf("%.1fk", $8/1000)) with labels offset 0,0.7 notitle

unset multiplot

# -- latency percentiles ----------------------------------------------------

if (lat) {
set output out . "-latency.png"
set terminal pngcairo size 1100,560 font "DejaVu Sans,11" noenhanced
set title title . ": latency, p50 and p99 (median of the runs, bars from the lowest to the highest)"
set ylabel "milliseconds (log scale)"
set logscale y
set yrange [0.1:*]
set format y "%g"
set offsets 0, 0, 0, 0
set key top left
plot data . "/latency.dat" \
         using ($2/1000):($3/1000):($4/1000):xtic(1) title "hookstream" lc rgb ours, \
      '' using ($5/1000):($6/1000):($7/1000) title "nchan" lc rgb theirs, \
      '' using ($0 - 0.125):($4/1000):(sprintf("%.1f", $2/1000)) with labels offset 0,0.7 notitle, \
      '' using ($0 + 0.125):($7/1000):(sprintf("%.1f", $5/1000)) with labels offset 0,0.7 notitle
unset logscale y
}

# -- idle memory ------------------------------------------------------------

if (mem) {
set output out . "-memory.png"
set terminal pngcairo size 800,520 font "DejaVu Sans,11" noenhanced
set title title . ": memory per idle connection (Pss growth / connections)"
set ylabel "bytes per connection"
set yrange [0:*]
set format y "%.0f"
set offsets 0, 0, graph 0.2, 0
set bmargin 3
set key top left
set style histogram errorbars gap 1 lw 1.5
plot data . "/memory.dat" \
         using 2:3:4:xtic(1) title "hookstream" lc rgb ours, \
      '' using 5:6:7 title "nchan" lc rgb theirs, \
      '' using 8:8:8 title "nginx's own idle keep-alive connection" lc rgb plain, \
      '' using ($0 - 0.25):4:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle, \
      '' using 0:7:(sprintf("%.0f", $5)) with labels offset 0,0.7 notitle, \
      '' using ($0 + 0.25):8:(sprintf("%.0f", $8)) with labels offset 0,0.7 notitle
}
