
use builtin;
use str;

set edit:completion:arg-completer[pidwatch] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'pidwatch'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'pidwatch'= {
            cand -p 'The pid file the service writes its main process id to'
            cand --pidfile 'The pid file the service writes its main process id to'
            cand --grace 'How long to wait for a new pid once the watched process is gone: a flip may write the new pid just after the old process exits'
            cand --startup-timeout 'How long the service may take to write a valid pid to the pid file for the first time'
            cand --generate 'Write shell completions and the man page into DIR, then exit'
            cand -q 'Only print errors, not the pids followed or ignored'
            cand --quiet 'Only print errors, not the pids followed or ignored'
            cand --trust-owner 'Also accept a pid that is not pidwatch''s descendant when the process belongs to the user that owns the pid file'
            cand --zero 'Always exit 0 when the service ends, whatever its status (psflip''s behaviour)'
            cand --no-subreaper 'Behave as on a kernel without child subreapers (for tests of that fallback)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
    ]
    $completions[$command]
}
