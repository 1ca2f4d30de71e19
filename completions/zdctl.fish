# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_zdctl_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_zdctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_zdctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_zdctl_using_subcommand
    set -l cmd (__fish_zdctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c zdctl -n "__fish_zdctl_needs_command" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zdctl -n "__fish_zdctl_needs_command" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "run" -d 'Supervise a service: hold its listeners and run its generations'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "restart" -d 'Start a new generation, wait until it is ready, then drain the old one'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "revert" -d 'During a restart\'s bake window: drain the new generation and keep the old one'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "status" -d 'Show running services: generations, listeners and restart counters'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "list" -d 'List every known service: service files and running supervisors'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "stop" -d 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "signal" -d 'Send a signal to the active generation of a service'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "logs" -d 'Show the last lines a service\'s generations printed, or follow them'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "reexec" -d 'Replace a service\'s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "top" -d 'Watch services live: generations, listeners, connections; restart with `r`'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "man" -d 'Print a man page (roff) to stdout: zdctl(1), or a command\'s (`zdctl man restart`)'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "verify" -d 'Restart a service N times under load and count every request that suffered'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "demo" -d 'Try it: restart a built-in demo service ten times under load, then clean up'
complete -c zdctl -n "__fish_zdctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -s c -l config -d 'The service file to run' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l name -d 'Flags form: the service name (names the control socket)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l listen -d 'Flags form: a listener to open and keep, `[FDNAME=]ADDR` (`:8080`, `127.0.0.1:8080`, `http=[::1]:80`, `/run/api.sock`, `dns=udp://:5353`). Repeat for more' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l ready -d 'Flags form: a readiness check (`accepting`, `notify`, `http:URL`, `tcp:HOST:PORT`, `exec:CMD`, `alive:DUR`). Repeat for more; default `accepting` with TCP or unix listeners, else `alive:1s`' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l ready-timeout -d 'Flags form: how long the readiness checks may take (default 30s)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l pidfile -d 'Flags form: where to write the active generation\'s pid' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l stop-signal -d 'Flags form: the signal that asks a generation to stop (default TERM)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l drain-timeout -d 'Flags form: how long a stopping generation gets before SIGKILL (default 30s)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l start-priority -d 'Flags form: the CPU priority a generation starts at: `idle` (the default: SCHED_IDLE until it is ready, at most 10 ms, so its start gives way to the requests being served) or `normal` (the service\'s priority throughout)' -r -f -a "idle\t''
normal\t''"
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l instances -d 'Flags form: how many processes each generation runs (told apart by `ZD_INSTANCE`, 0 to N-1), all on the same listeners (default 1)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l log-prefix -d 'Flags form: prefix each line of the program\'s output with `[NAME gen N]`'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l yield-cpu -d 'Flags form: run the supervisor ten nice levels below the service, so a restart\'s CPU work yields to the requests being served (needs CAP_SYS_NICE)'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -l intercept-binds -d 'Flags form: hand the program\'s own binds the service\'s listeners: a bind(2) to a listener\'s address gets the generation\'s socket (seccomp user notification)'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand run" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -l wait -d 'When to return: once the new generation is ready and promoted, or once the old one has drained too' -r -f -a "ready\t'Return once the new generation is ready and promoted; the old one drains on its own'
drained\t'Return once the old generation has exited'"
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -l timeout -d 'How long the new generation may take to be ready (overrides the service\'s ready.timeout for this restart)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -l attach -d 'When a restart is already running, follow it instead of failing as busy'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -l no-bake -d 'Skip the service\'s bake window: drain the old generation as soon as the new one is ready. A service another supervisor runs has no bake window; there it changes nothing'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -l json -d 'Print every event and the result as JSON lines on stdout'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zdctl -n "__fish_zdctl_using_subcommand restart" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand revert" -l json -d 'Print the supervisor\'s answer as JSON'
complete -c zdctl -n "__fish_zdctl_using_subcommand revert" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand revert" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zdctl -n "__fish_zdctl_using_subcommand revert" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand status" -l json -d 'Print the status as JSON (an array without NAME)'
complete -c zdctl -n "__fish_zdctl_using_subcommand status" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand list" -l json -d 'Print the list as a JSON array'
complete -c zdctl -n "__fish_zdctl_using_subcommand list" -l names -d 'Print only the names, one per line, without asking any supervisor (what the shell completions call)'
complete -c zdctl -n "__fish_zdctl_using_subcommand list" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand list" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand list" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand stop" -l json -d 'Print the supervisor\'s answer as JSON'
complete -c zdctl -n "__fish_zdctl_using_subcommand stop" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand stop" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand signal" -l json -d 'Print the supervisor\'s answer as JSON'
complete -c zdctl -n "__fish_zdctl_using_subcommand signal" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand signal" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand signal" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s g -l generation -d 'Only this generation\'s lines (see \'zdctl status\' for the numbers)' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s n -l lines -d 'How many of the last lines to show first' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s f -l follow -d 'Keep printing new lines as the generations print them, including those of generations that start later, until the supervisor stops or Ctrl-C'
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -l json -d 'One JSON object per line: generation, seq, unix_ms, stream, text'
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand logs" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -l binary -d 'The zdctl binary to execute, instead of the one installed where the supervisor was started from' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -l wait -d 'How long to wait while the supervisor is busy (a restart running) before giving up' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -l json -d 'Print the outcome as JSON'
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand reexec" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand top" -l pid -d 'Also watch the process tree of PID (any supervisor): its children are generations' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand top" -l interval -d 'How often to take a new snapshot' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand top" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand top" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand top" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand completions" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand man" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand man" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand man" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l url -d 'Where to send the load: `http://HOST:PORT/PATH` (a local address) or `unix:PATH`' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l restarts -d 'How many restarts' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l interval -d 'The pause before the first restart, between restarts and after the last' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l concurrency -d 'Connections in parallel' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l threads -d 'Client threads the connections are shared out over, each with its own event loop. One per CPU when left out' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l rate -d 'Open loop: this many requests per second in total, whatever the latency. Closed loop (each connection sends as soon as it has an answer) when left out' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l duration -d 'Run the load at least this long, even when the restarts are done sooner' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l timeout -d 'Bound on one request, connect included; slower requests count as timeouts' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l restart-cmd -d 'Restart by running this shell command instead of asking the supervisor; exit status 0 means the flip is done. Measures other tools and naive restarts' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l plot -d 'Draw latency and throughput over time, each flip marked, into this SVG file. Successful and failed requests are drawn apart, with the failures counted; a moment when no request finished is a gap in the latency lines' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l report -d 'Write one self-contained HTML page that any browser opens: the plot, the report\'s table, each restart, the failures by kind and the kernel\'s counters' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l keepalive -d 'Reuse each connection (the default)'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l close -d 'A new connection per request (`Connection: close`)'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l retry-idle-close -d 'Send a request once more, on a new connection, when the kept-alive connection it went out on closed before any byte of the answer, as HTTP clients do (RFC 9112 9.3.1.1): a server may close an idle connection as a request crosses it. Such requests are counted and shown as retried, not failed. Off: every such close is a failure'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l bake -d 'Rehearse a canary\'s revert: revert every restart during its bake window, as \'zdctl revert\' does, and check that each ends rolled back, that the generation that served before (same number, same pid) serves again, and that no request failed. Needs \'bake:\' in the service file'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -l json -d 'Print the report as one JSON object; no progress bar'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand verify" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -l restarts -d 'How many restarts' -r
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -l plot -d 'Draw latency and throughput over time, each flip marked, into this SVG file' -r -F
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -l json -d 'Print the report as one JSON object (the shape of `zdctl verify --json`)'
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -s v -l verbose -d 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)'
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -s h -l help -d 'Print help'
complete -c zdctl -n "__fish_zdctl_using_subcommand demo" -s V -l version -d 'Print version'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "run" -d 'Supervise a service: hold its listeners and run its generations'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "restart" -d 'Start a new generation, wait until it is ready, then drain the old one'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "revert" -d 'During a restart\'s bake window: drain the new generation and keep the old one'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "status" -d 'Show running services: generations, listeners and restart counters'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "list" -d 'List every known service: service files and running supervisors'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "stop" -d 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "signal" -d 'Send a signal to the active generation of a service'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "logs" -d 'Show the last lines a service\'s generations printed, or follow them'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "reexec" -d 'Replace a service\'s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "top" -d 'Watch services live: generations, listeners, connections; restart with `r`'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "man" -d 'Print a man page (roff) to stdout: zdctl(1), or a command\'s (`zdctl man restart`)'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "verify" -d 'Restart a service N times under load and count every request that suffered'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "demo" -d 'Try it: restart a built-in demo service ten times under load, then clean up'
complete -c zdctl -n "__fish_zdctl_using_subcommand help; and not __fish_seen_subcommand_from run restart revert status list stop signal logs reexec top completions man verify demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c zdctl -n "__fish_seen_subcommand_from run restart revert status stop signal logs reexec verify; and test (count (commandline -opc)) -eq 2" -f -a "(zdctl list --names 2>/dev/null)" -d 'service'
complete -c zdctl -n "__fish_seen_subcommand_from top" -f -a "(zdctl list --names 2>/dev/null)" -d 'service'
