"""The webmail's Filters and Vacation pages.

Both edit the account's active Sieve script through delivery/sieve.py
``ScriptStore`` (the one place scripts are checked and stored, as for
ManageSieve and ``mailyard sieve``). The rule builder and the vacation
form write the script ``webmail`` from a model (sieve/builder.py) and make
it the active one; the raw editor changes the active script's text, and a
text that does not compile is refused with its line and column, the
stored script unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..delivery.sieve import ScriptProblem, ScriptStore
from ..sieve import SieveError
from ..sieve.builder import (
    ACTIONS,
    FIELDS,
    Filters,
    Rule,
    RuleError,
    VacationSetting,
    from_script,
    to_script,
)
from .pages import checked_form, current, folders, notice_url, page, redirect, state

SCRIPT = "webmail"
MAX_RULES = 100
# the folders the rule builder suggests for "Move to folder": INBOX and the
# special-use folders first, then the first by name (``pages.folders``'s
# order); any other is typed, the datalist of an account of thousands of
# folders staying small
MAX_SUGGESTIONS = 100

FIELD_LABELS = {"from": "From", "to": "To", "subject": "Subject", "header": "Header field", "size": "Size (KB)",
                "spam": "Spam level"}
OP_LABELS = {"contains": "contains", "not-contains": "does not contain", "is": "is", "matches": "matches (* ?)",
             "over": "is over", "under": "is under", "ge": "is at least"}
ACTION_LABELS = {"fileinto": "Move to folder", "read": "Mark as read", "flag": "Flag", "forward": "Forward to",
                 "forward-copy": "Forward a copy to", "discard": "Delete", "reject": "Refuse with"}


def _scripts(request: Request) -> ScriptStore:
    services = state(request).services
    if services.sieve is not None:
        return services.sieve.scripts
    return ScriptStore(services.data_dir / "sieve")


def _load(scripts: ScriptStore, account_id: int) -> tuple[str | None, str]:
    """(the active script's name, its text); (None, "") when none is active."""
    name = scripts.active_name(account_id)
    if name is None:
        return None, ""
    try:
        return name, scripts.get(account_id, name)
    except ScriptProblem:
        return None, ""


def _store(scripts: ScriptStore, account_id: int, name: str, text: str) -> None:
    scripts.put(account_id, name, text)
    scripts.activate(account_id, name)


async def _state(request: Request, session: Any) -> dict:
    scripts = _scripts(request)
    name, text = await asyncio.to_thread(_load, scripts, session.account_id)
    model = from_script(text) if text else Filters()
    every = await folders(request, session)
    return {
        "folders": every,
        "folder_suggestions": [f["name"] for f in every[:MAX_SUGGESTIONS]],
        "script_name": name,
        "script_text": text,
        "model": model,
        "hand_written": bool(text) and model is None,
        "fields": FIELDS, "field_labels": FIELD_LABELS, "op_labels": OP_LABELS,
        "actions": ACTIONS, "action_labels": ACTION_LABELS,
        "sieve_on": _sieve_on(request),
    }


def _sieve_on(request: Request) -> bool:
    return state(request).services.sieve is not None


def _show(request: Request, name: str, ctx: dict, *, error: str = "", notice: str = "", status: int = 200,
          **extra: Any) -> Response:
    ctx = {**ctx, **extra}
    ctx.setdefault("raw_text", ctx["script_text"])
    return page(request, name, status=status, error=error, notice=notice, **ctx)


async def filters_view(request: Request) -> Response:
    session = current(request)
    return _show(request, "filters.html", await _state(request, session),
                 notice=request.query_params.get("notice", ""))


def _rule_from(form: Any) -> Rule:
    def get(key: str) -> str:
        value = form.get(key)
        return value if isinstance(value, str) else ""

    return Rule(field=get("field"), op=get("op") or "contains", value=get("value")[:1000],
                header=get("header")[:100], action=get("then"), arg=get("arg")[:1000],
                stop=get("stop") == "on")


async def _save_model(request: Request, session: Any, model: Filters) -> str:
    """Write ``model`` as the active script; raises RuleError, SieveError or ScriptProblem."""
    text = to_script(model)
    await asyncio.to_thread(_store, _scripts(request), session.account_id, SCRIPT, text)
    return text


async def filters_action(request: Request) -> Response:
    """add: a rule from the builder; delete / up: one rule by position;
    raw: the active script's text from the editor."""
    session = current(request)
    form = await checked_form(request, session)
    action = form.get("action")
    ctx = await _state(request, session)
    try:
        if action == "raw":
            text = form.get("script")
            text = text if isinstance(text, str) else ""
            name = ctx["script_name"] or SCRIPT
            if not text.strip():
                await asyncio.to_thread(_scripts(request).activate, session.account_id, None)
                return redirect(notice_url("/filters", "Filtering is off: no active script."))
            await asyncio.to_thread(_store, _scripts(request), session.account_id, name, text)
            return redirect(notice_url("/filters", "Script saved."))
        model: Filters = ctx["model"] or Filters()
        if action == "add":
            if len(model.rules) >= MAX_RULES:
                raise RuleError(f"at most {MAX_RULES} rules")
            model.rules.append(_rule_from(form))
        elif action in ("delete", "up"):
            try:
                i = int(str(form.get("index")))
            except ValueError:
                i = -1
            if not 0 <= i < len(model.rules):
                raise RuleError("no such rule")
            if action == "delete":
                del model.rules[i]
            elif i > 0:
                model.rules[i - 1], model.rules[i] = model.rules[i], model.rules[i - 1]
        else:
            raise RuleError("unknown action")
        await _save_model(request, session, model)
        return redirect(notice_url("/filters", "Filters saved."))
    except (ValueError, SieveError, ScriptProblem) as exc:  # ValueError: RuleError, or a value not checked
        extra = {"raw_text": form.get("script")} if action == "raw" else {}
        return _show(request, "filters.html", ctx, error=str(exc), status=400, **extra)


async def vacation_view(request: Request) -> Response:
    session = current(request)
    ctx = await _state(request, session)
    vacation = ctx["model"].vacation if ctx["model"] is not None else VacationSetting()
    return _show(request, "vacation.html", ctx, vacation=vacation, notice=request.query_params.get("notice", ""))


async def vacation_action(request: Request) -> Response:
    session = current(request)
    form = await checked_form(request, session)
    ctx = await _state(request, session)

    def get(key: str) -> str:
        value = form.get(key)
        return value if isinstance(value, str) else ""

    try:
        days = int(get("days") or "7")
    except ValueError:
        days = 0
    vacation = VacationSetting(enabled=get("enabled") == "on", start=get("start").strip(), end=get("end").strip(),
                               subject=get("subject")[:200], text=get("text")[:10_000], days=days)
    try:
        if ctx["hand_written"]:
            raise RuleError("your active script was written by hand: change the reply in its text on the "
                            "Filters page")
        model: Filters = ctx["model"] or Filters()
        model.vacation = vacation
        await _save_model(request, session, model)
    except (RuleError, SieveError, ScriptProblem) as exc:
        return _show(request, "vacation.html", ctx, vacation=vacation, error=str(exc), status=400)
    return redirect(notice_url("/vacation", "Vacation reply " + ("on." if vacation.enabled else "off.")))


def routes() -> list[Route]:
    return [
        Route("/filters", filters_view, methods=["GET"]),
        Route("/filters", filters_action, methods=["POST"]),
        Route("/vacation", vacation_view, methods=["GET"]),
        Route("/vacation", vacation_action, methods=["POST"]),
    ]
