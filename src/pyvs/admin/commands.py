"""ipvsadm commands applied to a rule set. Pure: each returns a new value or raises CommandError.

The messages of refused operations are the ones ipvsadm prints for the kernel's answers
(libipvs ipvs_strerror), so scripts that look for them keep working.
"""

from __future__ import annotations

from pyvs.admin.options import Action, Command, iter_restore
from pyvs.model import (
    ALL_SCHEDULERS,
    DEFAULT_SCHEDULER,
    HOST_MASK,
    Forwarding,
    ModelError,
    Real,
    Rules,
    Service,
    ServiceKey,
    Timeouts,
    validate_real,
    validate_scheduler,
    validate_service,
)

# The kernel's defaults for options left out of -E and -e (ipvsadm sends them every time).
DEFAULT_WEIGHT = 1


class CommandError(Exception):
    """An operation refused, as the kernel would refuse it in IPVS (exit status 1)."""


def _scheduler(given: str | None) -> str:
    name = given or DEFAULT_SCHEDULER
    try:
        return validate_scheduler(name)
    except ModelError as err:
        if name not in ALL_SCHEDULERS:
            raise CommandError(f"Scheduler or persistence engine not found: {err}") from None
        hint = "" if given else f"; '{name}' is the default when -s is not given"
        raise CommandError(f"{err}{hint}") from None


def _validated(svc: Service) -> Service:
    try:
        validate_service(svc)
    except ModelError as err:
        raise CommandError(str(err)) from None
    return svc


def _settings(key: ServiceKey, command: Command) -> Service:
    """A service with the settings of an -A or -E command."""
    return Service(key, _scheduler(command.scheduler), command.persistent, command.netmask or HOST_MASK,
                   command.sched_flags, mh_table_size=command.mh_table_size)


def _service(rules: Rules, key: ServiceKey, missing: str) -> Service:
    svc = rules.services.get(key)
    if svc is None:
        raise CommandError(missing)
    return svc


def apply_command(rules: Rules, command: Command) -> Rules:
    """The rule set after one rule command (-A -E -D -C -a -e -d). `rules` is not changed."""
    new = rules.copy()
    _apply(new, command)
    return new


def _apply(new: Rules, command: Command) -> None:
    """Apply one rule command to `new` itself; on error `new` may be half changed (callers work on a copy)."""
    action = command.action
    if action is Action.FLUSH:
        new.services.clear()
        return
    key = command.service
    if key is None:
        raise ValueError(f"the '{action.value}' command needs a service")
    if action is Action.ADD_SERVICE:
        if key in new.services:
            raise CommandError("Service already exists")
        new.services[key] = _validated(_settings(key, command))
    elif action is Action.EDIT_SERVICE:
        old = _service(new, key, "No such service")
        # As ipvsadm: -E sends every setting; what is not given goes back to its default.
        svc = _settings(key, command)
        svc.reals = old.reals
        new.services[key] = _validated(svc)
    elif action is Action.DELETE_SERVICE:
        _service(new, key, "No such service")
        del new.services[key]
    elif action in (Action.ADD_SERVER, Action.EDIT_SERVER, Action.DELETE_SERVER):
        _apply_server(_service(new, key, "Service not defined"), command)
    else:
        raise ValueError(f"'{action.value}' is not a rule command")


def _apply_server(svc: Service, command: Command) -> None:
    real_key = command.real
    if real_key is None:
        raise ValueError(f"the '{command.action.value}' command needs a real server")
    exists = real_key in svc.reals
    if command.action is Action.DELETE_SERVER:
        if not exists:
            raise CommandError("No such destination")
        del svc.reals[real_key]
        return
    if command.action is Action.ADD_SERVER and exists:
        raise CommandError("Destination already exists")
    if command.action is Action.EDIT_SERVER and not exists:
        raise CommandError("No such destination")
    weight = DEFAULT_WEIGHT if command.weight is None else command.weight
    # As ipvsadm, -e sends the forwarding method too: left out, it is -g again.
    real = Real(real_key[0], real_key[1], weight, command.forwarding or Forwarding.ROUTE, tunnel=command.tunnel)
    try:
        validate_real(svc, real)
    except ModelError as err:
        raise CommandError(str(err)) from None
    svc.reals[real_key] = real


def restore(rules: Rules, text: str) -> Rules:
    """The rule set after every line of --restore input, or an error naming the bad line.

    The whole input is checked before anything is returned, so a bad line changes nothing.
    Raises UsageError for a line that does not parse, CommandError for one that is refused.
    """
    new = rules.copy()
    for number, command in iter_restore(text):
        try:
            _apply(new, command)
        except CommandError as err:
            raise CommandError(f"line {number}: {err}") from None
    return new


def merge_timeouts(current: Timeouts, wanted: Timeouts) -> Timeouts:
    """--set: a value of 0 leaves that timeout as it is."""
    return Timeouts(
        tcp=wanted.tcp or current.tcp,
        tcpfin=wanted.tcpfin or current.tcpfin,
        udp=wanted.udp or current.udp,
    )
