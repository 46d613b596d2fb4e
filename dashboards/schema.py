"""Checks Grafana dashboard JSON against the Grafana schema, as PyPI's
grafana-foundation-sdk models it: every key must be one the schema knows
(a typo such as `gridpos` or `legendFormt` is dropped by the typed models,
so a round trip must keep every key), every value must have the schema's
type (numbers, booleans, enum values such as a legend `placement`), panels
must be of a known type and every query a typed Prometheus query.

Usage: python3 schema.py DASHBOARD.json...
"""
import enum
import json
import sys
import types
import typing

from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

register_default_plugins()


def dropped(src, out, path=""):
    """Keys of `src` that the round trip lost."""
    if isinstance(src, dict) and isinstance(out, dict):
        for k, v in src.items():
            if k not in out:
                yield f"{path}/{k}"
            else:
                yield from dropped(v, out[k], f"{path}/{k}")
    elif isinstance(src, list) and isinstance(out, list):
        for i, (a, b) in enumerate(zip(src, out)):
            yield from dropped(a, b, f"{path}[{i}]")


def hints(cls):
    try:
        return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    except Exception:
        return {}


def is_model(value):
    return hasattr(value, "to_json") and not isinstance(value, enum.Enum)


def matches(value, hint, path, errors):
    """Whether `value` fits `hint`; models are checked field by field."""
    if hint is typing.Any or hint is object:
        # Panel options and field config are typed by the panel's plugin.
        if is_model(value):
            check(value, path, errors)
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            return type(None) in options
        trial = []
        for option in options:
            if option is not type(None) and matches(value, option, path, trial):
                errors.extend(trial)
                return True
        return False
    if value is None:
        return False
    if origin is list:
        (item,) = typing.get_args(hint) or (typing.Any,)
        if not isinstance(value, list):
            return False
        for i, v in enumerate(value):
            if not matches(v, item, f"{path}[{i}]", errors):
                errors.append(f"{path}[{i}]: {v!r} is not {getattr(item, '__name__', item)}")
        return True
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if not isinstance(hint, type):
        return True
    if issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(value, runtime.UnknownDataquery):
        errors.append(f"{path}: a query of an unknown data source type")
        return True
    if not isinstance(value, hint):
        return False
    check(value, path, errors)
    return True


def check(model, path, errors):
    for name, hint in hints(type(model)).items():
        if not hasattr(model, name):
            continue
        value = getattr(model, name)
        if not matches(value, hint, f"{path}.{name}", errors):
            errors.append(f"{path}.{name}: {value!r} is not {hint}")


def validate(src):
    errors = []
    known = runtime.Runtime().dataquery_variants
    for i, panel in enumerate(src.get("panels", [])):
        if runtime.panelcfg_config(panel.get("type", "")) is None:
            errors.append(f"/panels[{i}]: unknown panel type {panel.get('type')!r}")
        for j, source in enumerate([panel] + panel.get("targets", [])):
            kind = (source.get("datasource") or {}).get("type", "")
            if kind and kind not in known:
                where = f"/panels[{i}]" + (f"/targets[{j - 1}]" if j else "")
                errors.append(f"{where}/datasource: unknown data source type {kind!r}")
    dash = Dashboard.from_json(src)
    out = json.loads(json.dumps(dash, cls=JSONEncoder))
    errors += [f"{p}: not in the Grafana schema" for p in dropped(src, out)]
    check(dash, "dashboard", errors)
    for panel in dash.panels or []:
        if isinstance(getattr(panel, "options", None), dict):
            errors.append(f"panel {panel.id_val}: options not checked (unknown panel type)")
    return errors


if __name__ == "__main__":
    failed = False
    for path in sys.argv[1:]:
        errors = validate(json.load(open(path)))
        for e in errors:
            print(f"{path}: {e}")
        failed |= bool(errors)
        if not errors:
            print(f"{path}: matches the Grafana schema")
    sys.exit(1 if failed else 0)
