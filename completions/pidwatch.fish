complete -c pidwatch -s p -l pidfile -d 'The pid file the service writes its main process id to' -r -F
complete -c pidwatch -l grace -d 'How long to wait for a new pid once the watched process is gone: a flip may write the new pid just after the old process exits' -r
complete -c pidwatch -l startup-timeout -d 'How long the service may take to write a valid pid to the pid file for the first time' -r
complete -c pidwatch -l generate -d 'Write shell completions and the man page into DIR, then exit' -r -F
complete -c pidwatch -s q -l quiet -d 'Only print errors, not the pids followed or ignored'
complete -c pidwatch -l trust-owner -d 'Also accept a pid that is not pidwatch\'s descendant when the process belongs to the user that owns the pid file'
complete -c pidwatch -l zero -d 'Always exit 0 when the service ends, whatever its status (psflip\'s behaviour)'
complete -c pidwatch -l no-subreaper -d 'Behave as on a kernel without child subreapers (for tests of that fallback)'
complete -c pidwatch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pidwatch -s V -l version -d 'Print version'
