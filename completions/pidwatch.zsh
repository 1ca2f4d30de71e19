#compdef pidwatch

autoload -U is-at-least

_pidwatch() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-p+[The pid file the service writes its main process id to]:PATH:_files' \
'--pidfile=[The pid file the service writes its main process id to]:PATH:_files' \
'--grace=[How long to wait for a new pid once the watched process is gone\: a flip may write the new pid just after the old process exits]:DURATION:_default' \
'--startup-timeout=[How long the service may take to write a valid pid to the pid file for the first time]:DURATION:_default' \
'--generate=[Write shell completions and the man page into DIR, then exit]:DIR:_files' \
'-q[Only print errors, not the pids followed or ignored]' \
'--quiet[Only print errors, not the pids followed or ignored]' \
'--trust-owner[Also accept a pid that is not pidwatch'\''s descendant when the process belongs to the user that owns the pid file]' \
'--zero[Always exit 0 when the service ends, whatever its status (psflip'\''s behaviour)]' \
'--no-subreaper[Behave as on a kernel without child subreapers (for tests of that fallback)]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
'*::command -- The command that starts the service, and its arguments:_default' \
&& ret=0
}

(( $+functions[_pidwatch_commands] )) ||
_pidwatch_commands() {
    local commands; commands=()
    _describe -t commands 'pidwatch commands' commands "$@"
}

if [ "$funcstack[1]" = "_pidwatch" ]; then
    _pidwatch "$@"
else
    compdef _pidwatch pidwatch
fi
