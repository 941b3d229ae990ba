"""kill -9 during refresh, in a loop, against the encrypted file store; and writes racing a refresh.

Kill loops (``run_mode``). Each loop picks one of the logged-in accounts, starts a
process that force-refreshes it (what ``litellm claude refresh`` does) and SIGKILLs that
process at a random moment, then checks what the kill left behind:

* the token file still parses and decrypts (``FileTokenStore.load`` of every account);
* every account's stored refresh token is still accepted by the fake Anthropic (the
  killed process's account and the bystanders alike);
* a temp file is left only by a kill inside the file write (the next writer rolls a
  complete one forward or deletes it);
* neither lock is wedged: a refresh in a fresh process succeeds within a few seconds.

A lost refresh token is blamed on the upstream when the killed process's request
reached the server, the server rotated the token (so the one in the file died), and
the process was killed before it had saved the new one: no client can prevent that.
Anything else is counted as lost by us. Both modes run: with refresh-token rotation (as
Anthropic does) and without, where any loss is ours.

Kill timing: the seeded RNG picks a stratum, then a uniform moment inside it. 10% of
loops kill a process while it starts up; the rest send "go" to an already started
process and kill it somewhere between "go" and 25% past its save: 15% before its
request is sent, 30% between that and reading the answer, 30% between the answer and
the completed save, 15% after. Each stratum is timed from the event that opens it (the
child's markers, read live from its stdout) for as long as it lasted in recent
un-killed refreshes, plus this loop's ``token_delay`` (the fake waits 10-50 ms before
answering) and fsync stall (0-15 ms per fsync, see :mod:`.child`). The phase a kill
actually landed in is read from the markers the child printed before dying and from
the fake's request counter.

Races (``run_races``). A refresh runs to the end while a second process, started at a
random moment of it, records a 429 cooldown (``manager.health.cool_down``) or logs the
account out. Afterwards a logout must still be a logout, and after a cooldown the store
must hold the live refresh token (never the one the refresh spent), the refresh's own
result, and the cooldown.

Modules: :mod:`.child` (the process), :mod:`.procs` (spawning, markers, aiming),
:mod:`.classify` (pure verdicts), :mod:`.testbed` (fake and file), :mod:`.run` (the
loops), :mod:`.report` (tables). ``python -m bench.kill_loop --help`` for the CLI.

Nothing is imported here: every child process imports this package, and its start-up
should cost only what the child itself needs.
"""
