"""The neighbouring providers' responses against their official shapes (issue #14, item 2).

rsvault serves read-only `Microsoft.Compute/virtualMachines/{vm}` and `Microsoft.Storage/storageAccounts/{account}`
so that `az backup` can resolve VMs and storage accounts. Their swaggers are not vendored in this repository
(tests/azure-spec holds the Recovery Services, Authorization and Monitor files); what the Azure CLI's own venv
does hold are the management SDKs generated from those swaggers, and these models are what `az` itself
deserializes with. So each response is checked against its model, strictly:

- every key the server sends is a property of the model (flattened `properties.*` paths included), at every
  depth: an unknown or misspelt key fails;
- every value has the model's type (string, integer, boolean, ISO 8601 date-time, list, map, nested model);
- every property the model marks required is present.

Models: `azure.mgmt.compute.v2024_11_01` (the version `az vm` uses) and `azure.mgmt.storage` (its single,
latest version, 2025-08-01). `az backup` itself requests VMs at 2023-03-01 and storage accounts at
2016-01-01 through the generic resources client; the SDKs ship no models for those versions, and the
properties rsvault serves are unchanged between them.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
import typing

import pytest
from azure.mgmt.compute.v2024_11_01 import models as compute_models
from azure.mgmt.storage import models as storage_models

from conftest import SUB, STAGING, STAGING_RG, VM, H

# the versions az sends (azure/cli/command_modules/backup/custom.py and custom_afs.py) and the SDKs' own
VM_API_VERSIONS = ["2023-03-01", "2024-11-01"]
STORAGE_API_VERSIONS = ["2016-01-01", "2025-08-01"]


# ---- msrest-style models (azure-mgmt-compute): _attribute_map + _validation ---------------------------------

@functools.cache
def _msrest_tree(cls) -> dict:
    """The model's JSON keys as a tree: {"properties": {"storageProfile": (attr, type)}, "id": (attr, type)}."""
    tree: dict = {}
    for attr, spec in cls._attribute_map.items():
        if not spec["key"]:  # additional_properties
            continue
        parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", spec["key"])]
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = (attr, spec["type"])
    return tree


def check_msrest(cls, data, path: str, errors: list[str]) -> None:
    if not isinstance(data, dict):
        errors.append(f"{path}: {type(data).__name__}, expected an object ({cls.__name__})")
        return
    tree = _msrest_tree(cls)

    def walk(node: dict, obj: dict, at: str) -> None:
        for key, value in obj.items():
            here = f"{at}.{key}"
            if key not in node:
                errors.append(f"{here}: not a property of {cls.__name__}")
            elif isinstance(node[key], dict):
                if not isinstance(value, dict):
                    errors.append(f"{here}: {type(value).__name__}, expected an object")
                else:
                    walk(node[key], value, here)
            else:
                _check_msrest_type(node[key][1], value, here, errors)

    walk(tree, data, path)
    for attr, rule in getattr(cls, "_validation", {}).items():
        if rule.get("required"):
            key = cls._attribute_map[attr]["key"]
            obj = data
            for p in re.split(r"(?<!\\)\.", key):
                obj = obj.get(p.replace("\\.", ".")) if isinstance(obj, dict) else None
            if obj is None:
                errors.append(f"{path}.{key}: required by {cls.__name__}, missing")


def _check_msrest_type(ty: str, value, path: str, errors: list[str]) -> None:
    if value is None:
        return
    if ty.startswith("[") and ty.endswith("]"):
        if not isinstance(value, list):
            errors.append(f"{path}: {type(value).__name__}, expected a list of {ty[1:-1]}")
            return
        for i, v in enumerate(value):
            _check_msrest_type(ty[1:-1], v, f"{path}[{i}]", errors)
    elif ty.startswith("{") and ty.endswith("}"):
        if not isinstance(value, dict):
            errors.append(f"{path}: {type(value).__name__}, expected a map of {ty[1:-1]}")
            return
        for k, v in value.items():
            _check_msrest_type(ty[1:-1], v, f"{path}.{k}", errors)
    elif ty == "object":
        pass
    else:
        scalar = _check_scalar(ty, value)
        if scalar is None:  # a model
            cls = getattr(compute_models, ty, None)
            if cls is None:
                errors.append(f"{path}: unknown model type {ty}")
            else:
                check_msrest(cls, value, path, errors)
        elif not scalar:
            errors.append(f"{path}: {value!r} is not a {ty}")


def _check_scalar(ty: str, value) -> bool | None:
    """True/False for a scalar type name, None when `ty` names a model."""
    if ty in ("str", "duration", "rfc-1123", "bytearray", "base64"):
        return isinstance(value, str)
    if ty in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ty == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ty == "bool":
        return isinstance(value, bool)
    if ty in ("iso-8601", "date"):
        return isinstance(value, str) and _is_iso(value)
    return None


def _is_iso(s: str) -> bool:
    try:
        dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


# ---- TypeSpec-style models (azure-mgmt-storage): rest fields + type hints ----------------------------------

@functools.cache
def _rest_fields(cls) -> dict:
    """{json key: (attribute, type hint)} of a model_base.Model class (fields are computed on first use)."""
    try:
        cls()
    except TypeError:
        pass
    hints = typing.get_type_hints(cls, localns={"_models": storage_models})
    return {f._rest_name: (attr, hints.get(attr, typing.Any)) for attr, f in cls._attr_to_rest_field.items()}


def check_typespec(cls, data, path: str, errors: list[str]) -> None:
    if not isinstance(data, dict):
        errors.append(f"{path}: {type(data).__name__}, expected an object ({cls.__name__})")
        return
    fields = _rest_fields(cls)
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{path}.{key}: not a property of {cls.__name__}")
        else:
            _check_hint(fields[key][1], value, f"{path}.{key}", errors)
    for key, (_, hint) in fields.items():
        if key not in data and not _optional(hint):
            errors.append(f"{path}.{key}: required by {cls.__name__}, missing")


def _optional(hint) -> bool:
    return typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)


def _check_hint(hint, value, path: str, errors: list[str]) -> None:
    if value is None or hint is typing.Any:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        args = [a for a in args if a is not type(None)]
        if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):  # Union[str, SomeEnum]
            if not isinstance(value, str):
                errors.append(f"{path}: {value!r} is not a string (enum)")
            return
        if len(args) == 1:
            _check_hint(args[0], value, path, errors)
        return
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: {type(value).__name__}, expected a list")
            return
        for i, v in enumerate(value):
            _check_hint(args[0], v, f"{path}[{i}]", errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: {type(value).__name__}, expected a map")
            return
        for k, v in value.items():
            _check_hint(args[1], v, f"{path}.{k}", errors)
    elif hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        if not isinstance(value, str):
            errors.append(f"{path}: {value!r} is not a string")
    elif hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: {value!r} is not a boolean")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: {value!r} is not an integer")
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: {value!r} is not a number")
    elif hint is dt.datetime:
        if not (isinstance(value, str) and _is_iso(value)):
            errors.append(f"{path}: {value!r} is not an ISO 8601 date-time")
    elif isinstance(hint, type) and hasattr(hint, "_attr_to_rest_field") or hasattr(hint, "_is_model"):
        check_typespec(hint, value, path, errors)
    else:
        errors.append(f"{path}: no check for the model's type {hint!r}")


# ---- the checker checks: what it must refuse -----------------------------------------------------------------

def test_checkers_refuse_what_the_models_do_not_have():
    vm = {"id": "/x", "name": "vm", "type": "Microsoft.Compute/virtualMachines", "location": "westus",
          "properties": {"storageProfile": {"osDisk": {"name": "d0", "createOption": "FromImage",
                                                       "diskSizeGB": 4}}}}
    errors: list[str] = []
    check_msrest(compute_models.VirtualMachine, vm, "$", errors)
    assert errors == []
    bad = {**vm, "colour": "red", "properties": {"storageProfile": {"osDisk": {"diskSizeGB": "4"}}}}
    del bad["location"]
    check_msrest(compute_models.VirtualMachine, bad, "$", errors)
    assert any(".colour: not a property" in e for e in errors), errors
    assert any("diskSizeGB: '4' is not a int" in e for e in errors), errors
    assert any("location: required" in e for e in errors), errors
    assert any("createOption: required" in e for e in errors), errors

    acct = {"id": "/x", "name": "a", "location": "westus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
            "properties": {"creationTime": "2026-01-01T00:00:00Z", "primaryEndpoints": {"file": "https://a/"}}}
    errors = []
    check_typespec(storage_models.StorageAccount, acct, "$", errors)
    assert errors == []
    bad = {**acct, "sku": {"nam": "x"}, "properties": {"creationTime": "yesterday", "isHnsEnabled": "no"}}
    check_typespec(storage_models.StorageAccount, bad, "$", errors)
    assert any("sku.nam: not a property" in e for e in errors), errors
    assert any("sku.name: required" in e for e in errors), errors
    assert any("creationTime: 'yesterday'" in e for e in errors), errors
    assert any("isHnsEnabled: 'no' is not a boolean" in e for e in errors), errors


# ---- what rsvault serves -----------------------------------------------------------------------------------

def _rg_path(rg: str, rest: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/{rest}"


def served(cli, rg: str, rest: str, api_version: str, check, model) -> dict:
    """GETs a resource rsvault serves and checks it against `model`; returns its body."""
    r = cli.server.http().get(_rg_path(rg, rest), api_version=api_version)
    assert r.status_code == 200, r.text
    body = r.json()
    errors: list[str] = []
    check(model, body, "$", errors)
    assert errors == [], "\n".join(errors)
    return body


@pytest.mark.parametrize("api_version", VM_API_VERSIONS)
def test_vm_matches_the_compute_model(cli, api_version):
    body = served(cli, H.SRC_RG, f"Microsoft.Compute/virtualMachines/{VM}", api_version, check_msrest,
                  compute_models.VirtualMachine)
    # and the parts az reads are there, with the configured disks
    disks = body["properties"]["storageProfile"]
    assert disks["osDisk"]["name"] and len(disks.get("dataDisks", [])) == len(cli.vm_disks) - 1, body
    assert body["location"], body


@pytest.mark.parametrize("api_version", STORAGE_API_VERSIONS)
@pytest.mark.parametrize("rg,account", [(H.SRC_RG, "acct1"), (STAGING_RG, STAGING)])
def test_storage_accounts_match_the_storage_model(cli, api_version, rg, account):
    rest = f"Microsoft.Storage/storageAccounts/{account}"
    body = served(cli, rg, rest, api_version, check_typespec, storage_models.StorageAccount)
    assert body["name"] == account and body["id"].lower() == _rg_path(rg, rest).lower(), body


@pytest.mark.parametrize("rest", ["Microsoft.Compute/virtualMachines/novm", "Microsoft.Compute/disks/d0",
                                  "Microsoft.Storage/storageAccounts/noacct",
                                  "Microsoft.Storage/storageAccounts/acct1/fileServices/default"])
def test_anything_else_is_resource_not_found(cli, rest):
    r = cli.server.http().get(_rg_path(H.SRC_RG, rest), api_version="2024-11-01")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "ResourceNotFound", r.text
