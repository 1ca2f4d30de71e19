
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'zdctl' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'zdctl'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'zdctl' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Supervise a service: hold its listeners and run its generations')
            [CompletionResult]::new('restart', 'restart', [CompletionResultType]::ParameterValue, 'Start a new generation, wait until it is ready, then drain the old one')
            [CompletionResult]::new('revert', 'revert', [CompletionResultType]::ParameterValue, 'During a restart''s bake window: drain the new generation and keep the old one')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show running services: generations, listeners and restart counters')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List every known service: service files and running supervisors')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor')
            [CompletionResult]::new('signal', 'signal', [CompletionResultType]::ParameterValue, 'Send a signal to the active generation of a service')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Show the last lines a service''s generations printed, or follow them')
            [CompletionResult]::new('reexec', 'reexec', [CompletionResultType]::ParameterValue, 'Replace a service''s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Watch services live: generations, listeners, connections; restart with `r`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print a man page (roff) to stdout: zdctl(1), or a command''s (`zdctl man restart`)')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Restart a service N times under load and count every request that suffered')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Try it: restart a built-in demo service ten times under load, then clean up')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'zdctl;run' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'The service file to run')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The service file to run')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Flags form: the service name (names the control socket)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Flags form: a listener to open and keep, `[FDNAME=]ADDR` (`:8080`, `127.0.0.1:8080`, `http=[::1]:80`, `/run/api.sock`, `dns=udp://:5353`). Repeat for more')
            [CompletionResult]::new('--ready', '--ready', [CompletionResultType]::ParameterName, 'Flags form: a readiness check (`accepting`, `notify`, `http:URL`, `tcp:HOST:PORT`, `exec:CMD`, `alive:DUR`). Repeat for more; default `accepting` with TCP or unix listeners, else `alive:1s`')
            [CompletionResult]::new('--ready-timeout', '--ready-timeout', [CompletionResultType]::ParameterName, 'Flags form: how long the readiness checks may take (default 30s)')
            [CompletionResult]::new('--pidfile', '--pidfile', [CompletionResultType]::ParameterName, 'Flags form: where to write the active generation''s pid')
            [CompletionResult]::new('--stop-signal', '--stop-signal', [CompletionResultType]::ParameterName, 'Flags form: the signal that asks a generation to stop (default TERM)')
            [CompletionResult]::new('--drain-timeout', '--drain-timeout', [CompletionResultType]::ParameterName, 'Flags form: how long a stopping generation gets before SIGKILL (default 30s)')
            [CompletionResult]::new('--start-priority', '--start-priority', [CompletionResultType]::ParameterName, 'Flags form: the CPU priority a generation starts at: `idle` (the default: SCHED_IDLE until it is ready, at most 10 ms, so its start gives way to the requests being served) or `normal` (the service''s priority throughout)')
            [CompletionResult]::new('--instances', '--instances', [CompletionResultType]::ParameterName, 'Flags form: how many processes each generation runs (told apart by `ZD_INSTANCE`, 0 to N-1), all on the same listeners (default 1)')
            [CompletionResult]::new('--log-prefix', '--log-prefix', [CompletionResultType]::ParameterName, 'Flags form: prefix each line of the program''s output with `[NAME gen N]`')
            [CompletionResult]::new('--yield-cpu', '--yield-cpu', [CompletionResultType]::ParameterName, 'Flags form: run the supervisor ten nice levels below the service, so a restart''s CPU work yields to the requests being served (needs CAP_SYS_NICE)')
            [CompletionResult]::new('--intercept-binds', '--intercept-binds', [CompletionResultType]::ParameterName, 'Flags form: hand the program''s own binds the service''s listeners: a bind(2) to a listener''s address gets the generation''s socket (seccomp user notification)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;restart' {
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When to return: once the new generation is ready and promoted, or once the old one has drained too')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long the new generation may take to be ready (overrides the service''s ready.timeout for this restart)')
            [CompletionResult]::new('--attach', '--attach', [CompletionResultType]::ParameterName, 'When a restart is already running, follow it instead of failing as busy')
            [CompletionResult]::new('--no-bake', '--no-bake', [CompletionResultType]::ParameterName, 'Skip the service''s bake window: drain the old generation as soon as the new one is ready. A service another supervisor runs has no bake window; there it changes nothing')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print every event and the result as JSON lines on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;revert' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the supervisor''s answer as JSON')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;status' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the status as JSON (an array without NAME)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;list' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the list as a JSON array')
            [CompletionResult]::new('--names', '--names', [CompletionResultType]::ParameterName, 'Print only the names, one per line, without asking any supervisor (what the shell completions call)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;stop' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the supervisor''s answer as JSON')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;signal' {
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the supervisor''s answer as JSON')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;logs' {
            [CompletionResult]::new('-g', '-g', [CompletionResultType]::ParameterName, 'Only this generation''s lines (see ''zdctl status'' for the numbers)')
            [CompletionResult]::new('--generation', '--generation', [CompletionResultType]::ParameterName, 'Only this generation''s lines (see ''zdctl status'' for the numbers)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'How many of the last lines to show first')
            [CompletionResult]::new('--lines', '--lines', [CompletionResultType]::ParameterName, 'How many of the last lines to show first')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new lines as the generations print them, including those of generations that start later, until the supervisor stops or Ctrl-C')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new lines as the generations print them, including those of generations that start later, until the supervisor stops or Ctrl-C')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'One JSON object per line: generation, seq, unix_ms, stream, text')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;reexec' {
            [CompletionResult]::new('--binary', '--binary', [CompletionResultType]::ParameterName, 'The zdctl binary to execute, instead of the one installed where the supervisor was started from')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'How long to wait while the supervisor is busy (a restart running) before giving up')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the outcome as JSON')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;top' {
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'Also watch the process tree of PID (any supervisor): its children are generations')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'How often to take a new snapshot')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;completions' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;man' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;verify' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Where to send the load: `http://HOST:PORT/PATH` (a local address) or `unix:PATH`')
            [CompletionResult]::new('--restarts', '--restarts', [CompletionResultType]::ParameterName, 'How many restarts')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'The pause before the first restart, between restarts and after the last')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Connections in parallel')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Client threads the connections are shared out over, each with its own event loop. One per CPU when left out')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Open loop: this many requests per second in total, whatever the latency. Closed loop (each connection sends as soon as it has an answer) when left out')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Run the load at least this long, even when the restarts are done sooner')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Bound on one request, connect included; slower requests count as timeouts')
            [CompletionResult]::new('--restart-cmd', '--restart-cmd', [CompletionResultType]::ParameterName, 'Restart by running this shell command instead of asking the supervisor; exit status 0 means the flip is done. Measures other tools and naive restarts')
            [CompletionResult]::new('--plot', '--plot', [CompletionResultType]::ParameterName, 'Draw latency and throughput over time, each flip marked, into this SVG file. Successful and failed requests are drawn apart, with the failures counted; a moment when no request finished is a gap in the latency lines')
            [CompletionResult]::new('--report', '--report', [CompletionResultType]::ParameterName, 'Write one self-contained HTML page that any browser opens: the plot, the report''s table, each restart, the failures by kind and the kernel''s counters')
            [CompletionResult]::new('--keepalive', '--keepalive', [CompletionResultType]::ParameterName, 'Reuse each connection (the default)')
            [CompletionResult]::new('--close', '--close', [CompletionResultType]::ParameterName, 'A new connection per request (`Connection: close`)')
            [CompletionResult]::new('--retry-idle-close', '--retry-idle-close', [CompletionResultType]::ParameterName, 'Send a request once more, on a new connection, when the kept-alive connection it went out on closed before any byte of the answer, as HTTP clients do (RFC 9112 9.3.1.1): a server may close an idle connection as a request crosses it. Such requests are counted and shown as retried, not failed. Off: every such close is a failure')
            [CompletionResult]::new('--bake', '--bake', [CompletionResultType]::ParameterName, 'Rehearse a canary''s revert: revert every restart during its bake window, as ''zdctl revert'' does, and check that each ends rolled back, that the generation that served before (same number, same pid) serves again, and that no request failed. Needs ''bake:'' in the service file')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the report as one JSON object; no progress bar')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;demo' {
            [CompletionResult]::new('--restarts', '--restarts', [CompletionResultType]::ParameterName, 'How many restarts')
            [CompletionResult]::new('--plot', '--plot', [CompletionResultType]::ParameterName, 'Draw latency and throughput over time, each flip marked, into this SVG file')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the report as one JSON object (the shape of `zdctl verify --json`)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More logging on stderr: -v info, -vv debug, -vvv trace (ZD_LOG overrides)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'zdctl;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Supervise a service: hold its listeners and run its generations')
            [CompletionResult]::new('restart', 'restart', [CompletionResultType]::ParameterValue, 'Start a new generation, wait until it is ready, then drain the old one')
            [CompletionResult]::new('revert', 'revert', [CompletionResultType]::ParameterValue, 'During a restart''s bake window: drain the new generation and keep the old one')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show running services: generations, listeners and restart counters')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List every known service: service files and running supervisors')
            [CompletionResult]::new('stop', 'stop', [CompletionResultType]::ParameterValue, 'Stop a service run by `zdctl run`: drain every generation, then end its supervisor')
            [CompletionResult]::new('signal', 'signal', [CompletionResultType]::ParameterValue, 'Send a signal to the active generation of a service')
            [CompletionResult]::new('logs', 'logs', [CompletionResultType]::ParameterValue, 'Show the last lines a service''s generations printed, or follow them')
            [CompletionResult]::new('reexec', 'reexec', [CompletionResultType]::ParameterValue, 'Replace a service''s supervisor with the zdctl binary installed now, in place: same pid, same listeners, same generations')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Watch services live: generations, listeners, connections; restart with `r`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print a man page (roff) to stdout: zdctl(1), or a command''s (`zdctl man restart`)')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Restart a service N times under load and count every request that suffered')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Try it: restart a built-in demo service ten times under load, then clean up')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'zdctl;help;run' {
            break
        }
        'zdctl;help;restart' {
            break
        }
        'zdctl;help;revert' {
            break
        }
        'zdctl;help;status' {
            break
        }
        'zdctl;help;list' {
            break
        }
        'zdctl;help;stop' {
            break
        }
        'zdctl;help;signal' {
            break
        }
        'zdctl;help;logs' {
            break
        }
        'zdctl;help;reexec' {
            break
        }
        'zdctl;help;top' {
            break
        }
        'zdctl;help;completions' {
            break
        }
        'zdctl;help;man' {
            break
        }
        'zdctl;help;verify' {
            break
        }
        'zdctl;help;demo' {
            break
        }
        'zdctl;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
