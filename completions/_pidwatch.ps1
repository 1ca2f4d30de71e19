
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'pidwatch' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'pidwatch'
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
        'pidwatch' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The pid file the service writes its main process id to')
            [CompletionResult]::new('--pidfile', '--pidfile', [CompletionResultType]::ParameterName, 'The pid file the service writes its main process id to')
            [CompletionResult]::new('--grace', '--grace', [CompletionResultType]::ParameterName, 'How long to wait for a new pid once the watched process is gone: a flip may write the new pid just after the old process exits')
            [CompletionResult]::new('--startup-timeout', '--startup-timeout', [CompletionResultType]::ParameterName, 'How long the service may take to write a valid pid to the pid file for the first time')
            [CompletionResult]::new('--generate', '--generate', [CompletionResultType]::ParameterName, 'Write shell completions and the man page into DIR, then exit')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Only print errors, not the pids followed or ignored')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Only print errors, not the pids followed or ignored')
            [CompletionResult]::new('--trust-owner', '--trust-owner', [CompletionResultType]::ParameterName, 'Also accept a pid that is not pidwatch''s descendant when the process belongs to the user that owns the pid file')
            [CompletionResult]::new('--zero', '--zero', [CompletionResultType]::ParameterName, 'Always exit 0 when the service ends, whatever its status (psflip''s behaviour)')
            [CompletionResult]::new('--no-subreaper', '--no-subreaper', [CompletionResultType]::ParameterName, 'Behave as on a kernel without child subreapers (for tests of that fallback)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
