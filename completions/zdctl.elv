
use builtin;
use str;

set edit:completion:arg-completer[zdctl] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'zdctl'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'zdctl'= {
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Supervise a service: hold its listeners and run its generations'
            cand restart 'Start a new generation, wait until it is ready, then drain the old one'
            cand revert 'During a restart''s bake window: drain the new generation and keep the old one'
            cand status 'Show running services: generations, listeners and restart counters'
            cand list 'List every known service: service files and running supervisors'
            cand stop 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor'
            cand signal 'Send a signal to the active generation of a service'
            cand logs 'Show the last lines a service''s generations printed, or follow them'
            cand reexec 'Replace a service''s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations'
            cand top 'Watch services live: generations, listeners, connections; restart with `r`'
            cand completions 'Print a shell completion script to stdout'
            cand man 'Print a man page (roff) to stdout: zdctl(1), or a command''s (`zdctl man restart`)'
            cand verify 'Restart a service N times under load and count every request that suffered'
            cand demo 'Try it: restart a built-in demo service ten times under load, then clean up'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'zdctl;run'= {
            cand -c 'The service file to run'
            cand --config 'The service file to run'
            cand --name 'Flags form: the service name (names the control socket)'
            cand --listen 'Flags form: a listener to open and keep, `[FDNAME=]ADDR` (`:8080`, `127.0.0.1:8080`, `http=[::1]:80`, `/run/api.sock`, `dns=udp://:5353`). Repeat for more'
            cand --ready 'Flags form: a readiness check (`accepting`, `notify`, `http:URL`, `tcp:HOST:PORT`, `exec:CMD`, `alive:DUR`). Repeat for more; default `accepting` with TCP or unix listeners, else `alive:1s`'
            cand --ready-timeout 'Flags form: how long the readiness checks may take (default 30s)'
            cand --pidfile 'Flags form: where to write the active generation''s pid'
            cand --stop-signal 'Flags form: the signal that asks a generation to stop (default TERM)'
            cand --drain-timeout 'Flags form: how long a stopping generation gets before SIGKILL (default 30s)'
            cand --start-priority 'Flags form: the CPU priority a generation starts at: `idle` (the default: SCHED_IDLE until it is ready, at most 10 ms, so its start gives way to the requests being served) or `normal` (the service''s priority throughout)'
            cand --instances 'Flags form: how many processes each generation runs (told apart by `ZD_INSTANCE`, 0 to N-1), all on the same listeners (default 1)'
            cand --log-prefix 'Flags form: prefix each line of the program''s output with `[NAME gen N]`'
            cand --yield-cpu 'Flags form: run the supervisor ten nice levels below the service, so a restart''s CPU work yields to the requests being served (needs CAP_SYS_NICE)'
            cand --intercept-binds 'Flags form: hand the program''s own binds the service''s listeners: a bind(2) to a listener''s address gets the generation''s socket (seccomp user notification)'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;restart'= {
            cand --wait 'When to return: once the new generation is ready and promoted, or once the old one has drained too'
            cand --timeout 'How long the new generation may take to be ready (overrides the service''s ready.timeout for this restart)'
            cand --attach 'When a restart is already running, follow it instead of failing as busy'
            cand --no-bake 'Skip the service''s bake window: drain the old generation as soon as the new one is ready. A service another supervisor runs has no bake window; there it changes nothing'
            cand --json 'Print every event and the result as JSON lines on stdout'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;revert'= {
            cand --json 'Print the supervisor''s answer as JSON'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;status'= {
            cand --json 'Print the status as JSON (an array without NAME)'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;list'= {
            cand --json 'Print the list as a JSON array'
            cand --names 'Print only the names, one per line, without asking any supervisor (what the shell completions call)'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;stop'= {
            cand --json 'Print the supervisor''s answer as JSON'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;signal'= {
            cand --json 'Print the supervisor''s answer as JSON'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;logs'= {
            cand -g 'Only this generation''s lines (see ''zdctl status'' for the numbers)'
            cand --generation 'Only this generation''s lines (see ''zdctl status'' for the numbers)'
            cand -n 'How many of the last lines to show first'
            cand --lines 'How many of the last lines to show first'
            cand -f 'Keep printing new lines as the generations print them, including those of generations that start later, until the supervisor stops or Ctrl-C'
            cand --follow 'Keep printing new lines as the generations print them, including those of generations that start later, until the supervisor stops or Ctrl-C'
            cand --json 'One JSON object per line: generation, seq, unix_ms, stream, text'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;reexec'= {
            cand --binary 'The zdctl binary to execute, instead of the one installed where the supervisor was started from'
            cand --wait 'How long to wait while the supervisor is busy (a restart running) before giving up'
            cand --json 'Print the outcome as JSON'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;top'= {
            cand --pid 'Also watch the process tree of PID (any supervisor): its children are generations'
            cand --interval 'How often to take a new snapshot'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;completions'= {
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;man'= {
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;verify'= {
            cand --url 'Where to send the load: `http://HOST:PORT/PATH` (a local address) or `unix:PATH`'
            cand --restarts 'How many restarts'
            cand --interval 'The pause before the first restart, between restarts and after the last'
            cand --concurrency 'Connections in parallel'
            cand --threads 'Client threads the connections are shared out over, each with its own event loop. One per CPU when left out'
            cand --rate 'Open loop: this many requests per second in total, whatever the latency. Closed loop (each connection sends as soon as it has an answer) when left out'
            cand --duration 'Run the load at least this long, even when the restarts are done sooner'
            cand --timeout 'Bound on one request, connect included; slower requests count as timeouts'
            cand --restart-cmd 'Restart by running this shell command instead of asking the supervisor; exit status 0 means the flip is done. Measures other tools and naive restarts'
            cand --plot 'Draw latency and throughput over time, each flip marked, into this SVG file. Successful and failed requests are drawn apart, with the failures counted; a moment when no request finished is a gap in the latency lines'
            cand --report 'Write one self-contained HTML page that any browser opens: the plot, the report''s table, each restart, the failures by kind and the kernel''s counters'
            cand --keepalive 'Reuse each connection (the default)'
            cand --close 'A new connection per request (`Connection: close`)'
            cand --retry-idle-close 'Send a request once more, on a new connection, when the kept-alive connection it went out on closed before any byte of the answer, as HTTP clients do (RFC 9112 9.3.1.1): a server may close an idle connection as a request crosses it. Such requests are counted and shown as retried, not failed. Off: every such close is a failure'
            cand --bake 'Rehearse a canary''s revert: revert every restart during its bake window, as ''zdctl revert'' does, and check that each ends rolled back, that the generation that served before (same number, same pid) serves again, and that no request failed. Needs ''bake:'' in the service file'
            cand --json 'Print the report as one JSON object; no progress bar'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;demo'= {
            cand --restarts 'How many restarts'
            cand --plot 'Draw latency and throughput over time, each flip marked, into this SVG file'
            cand --json 'Print the report as one JSON object (the shape of `zdctl verify --json`)'
            cand -v 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand --verbose 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'zdctl;help'= {
            cand run 'Supervise a service: hold its listeners and run its generations'
            cand restart 'Start a new generation, wait until it is ready, then drain the old one'
            cand revert 'During a restart''s bake window: drain the new generation and keep the old one'
            cand status 'Show running services: generations, listeners and restart counters'
            cand list 'List every known service: service files and running supervisors'
            cand stop 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor'
            cand signal 'Send a signal to the active generation of a service'
            cand logs 'Show the last lines a service''s generations printed, or follow them'
            cand reexec 'Replace a service''s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations'
            cand top 'Watch services live: generations, listeners, connections; restart with `r`'
            cand completions 'Print a shell completion script to stdout'
            cand man 'Print a man page (roff) to stdout: zdctl(1), or a command''s (`zdctl man restart`)'
            cand verify 'Restart a service N times under load and count every request that suffered'
            cand demo 'Try it: restart a built-in demo service ten times under load, then clean up'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'zdctl;help;run'= {
        }
        &'zdctl;help;restart'= {
        }
        &'zdctl;help;revert'= {
        }
        &'zdctl;help;status'= {
        }
        &'zdctl;help;list'= {
        }
        &'zdctl;help;stop'= {
        }
        &'zdctl;help;signal'= {
        }
        &'zdctl;help;logs'= {
        }
        &'zdctl;help;reexec'= {
        }
        &'zdctl;help;top'= {
        }
        &'zdctl;help;completions'= {
        }
        &'zdctl;help;man'= {
        }
        &'zdctl;help;verify'= {
        }
        &'zdctl;help;demo'= {
        }
        &'zdctl;help;help'= {
        }
    ]
    $completions[$command]
}
