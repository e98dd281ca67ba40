"""The repository as the contract broker (docs/releasing.md#can-i-deploy-the-repository-as-the-broker). Standard library only.

- Pacticipants are the components of dev/release.py (users, feed, notifications, gateway, shared);
  a component's version is its release (`<name>-v<version>` tags) and the working tree's version is
  `dev/release.py version <name>` (`1.2.0`, or `1.2.0+dev` when changed since that release).
- Contracts are the Pact files under contracts/ (HTTP pacts in contracts/pacts/; message pacts of
  events plug in the same way: any Pact JSON file under contracts/ with `consumer.name` and
  `provider.name` is a contract). The contract of a consumer at version V is the file as it is at
  the tag `<consumer>-vV` (the working tree for the working tree's version); its identity is the
  SHA-256 of its canonical JSON.
- Verification results: contracts/verifications.json, `{provider: {provider version: {consumer:
  [contract sha256, ...]}}}`, written by the provider's verification (`record_verified`, with
  PACT_UPDATE=1; otherwise `assert_recorded` fails when the committed file lacks what was verified).
- Deployed versions: contracts/environments.json, `{environment: {component: version}}`, written by
  `make record-deploy ENV=… SERVICE=… VERSION=…` after a deploy.

    python contracts/broker.py can-i-deploy users 1.1.0 [--env production]   # `make can-i-deploy`
    python contracts/broker.py can-i-deploy users current                    # the working tree
    python contracts/broker.py check             # every component's working tree, every environment (make lint)
    python contracts/broker.py record-deploy production users 1.1.0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "dev"))
import release  # noqa: E402

VERIFICATIONS = HERE / "verifications.json"
ENVIRONMENTS = HERE / "environments.json"
BROKER_FILES = {VERIFICATIONS.name, ENVIRONMENTS.name}


@dataclass(frozen=True)
class Contract:
    consumer: str
    provider: str
    path: str  # relative to the repository root
    sha256: str


def contract_sha(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _as_contract(path: str, text: str) -> Contract | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    consumer, provider = (
        data.get(k, {}).get("name") if isinstance(data.get(k), dict) else None for k in ("consumer", "provider")
    )
    if not consumer or not provider:
        return None
    return Contract(consumer, provider, path, contract_sha(data))


def contracts_in_tree(root: Path = ROOT) -> list[Contract]:
    found = []
    for path in sorted((root / "contracts").rglob("*.json")):
        if path.name not in BROKER_FILES:
            contract = _as_contract(str(path.relative_to(root)), path.read_text())
            if contract:
                found.append(contract)
    return found


def contracts_at(ref: str, root: Path = ROOT) -> list[Contract]:
    """The contracts as committed at a tag or commit."""
    names = release.git(root, "ls-tree", "-r", "--name-only", ref, "--", "contracts").splitlines()
    found = []
    for name in sorted(names):
        if name.endswith(".json") and Path(name).name not in BROKER_FILES:
            contract = _as_contract(name, release.git(root, "show", f"{ref}:{name}"))
            if contract:
                found.append(contract)
    return found


def is_current(root: Path, name: str, version: str) -> bool:
    return version in ("current", release.current_version(root, name))


def contracts_of(root: Path, name: str, version: str) -> list[Contract]:
    """Every contract in the tree of `name` at `version` (the working tree for its current version)."""
    if is_current(root, name, version):
        return contracts_in_tree(root)
    return contracts_at(release.ref(root, name, version), root)


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def verified(verifications: dict, provider: str, provider_version: str, consumer: str) -> set[str]:
    return set(verifications.get(provider, {}).get(provider_version, {}).get(consumer, []))


def can_i_deploy(name: str, version: str, environment: str, root: Path = ROOT) -> list[str]:
    """Why `name` at `version` cannot be deployed next to what `environment` runs ([] = it can)."""
    if version == "current":
        version = release.current_version(root, name)
    deployed = {n: v for n, v in load(root / ENVIRONMENTS.relative_to(ROOT)).get(environment, {}).items() if n != name}
    verifications = load(root / VERIFICATIONS.relative_to(ROOT))
    problems = []
    # as a consumer: each of its contracts verified by the deployed version of the provider
    for contract in contracts_of(root, name, version):
        if contract.consumer != name or contract.provider not in deployed:
            continue
        provider_version = deployed[contract.provider]
        if contract.sha256 not in verified(verifications, contract.provider, provider_version, name):
            problems.append(
                f"{name} {version} needs {contract.path} (sha256 {contract.sha256[:12]}), which "
                f"{contract.provider} {provider_version} ({environment}) has not verified"
            )
    # as a provider: the contract of each deployed consumer verified by this version
    for consumer, consumer_version in sorted(deployed.items()):
        for contract in contracts_of(root, consumer, consumer_version):
            if contract.consumer != consumer or contract.provider != name:
                continue
            if contract.sha256 not in verified(verifications, name, version, consumer):
                problems.append(
                    f"{consumer} {consumer_version} ({environment}) needs {contract.path} "
                    f"(sha256 {contract.sha256[:12]}), which {name} {version} has not verified"
                )
    return problems


def deployed_contracts_for(provider: str, root: Path = ROOT) -> list[tuple[str, str, Contract, str]]:
    """(environment, consumer version, contract, contract text) of every deployed consumer of the
    provider: what the provider's verification must also verify, besides the working tree's."""
    out = []
    for environment, versions in sorted(load(root / ENVIRONMENTS.relative_to(ROOT)).items()):
        for consumer, version in sorted(versions.items()):
            if consumer == provider:
                continue
            try:
                tag = release.ref(root, consumer, version)
            except release.ReleaseError as exc:
                raise release.ReleaseError(
                    f"contracts/environments.json says {consumer} {version} runs in {environment}, but {exc}"
                ) from None
            for contract in contracts_at(tag, root):
                if contract.consumer == consumer and contract.provider == provider:
                    out.append((environment, version, contract, release.git(root, "show", f"{tag}:{contract.path}")))
    return out


def record_verified(provider: str, consumer_shas: dict[str, set[str]], root: Path = ROOT) -> Path:
    """Add what the provider's working tree verified to its current version's record."""
    path = root / VERIFICATIONS.relative_to(ROOT)
    data = load(path)
    version = release.current_version(root, provider)
    record = data.setdefault(provider, {}).setdefault(version, {})
    for consumer, shas in consumer_shas.items():
        record[consumer] = sorted(set(record.get(consumer, [])) | shas)
    save(path, data)
    return path


def assert_recorded(provider: str, consumer_shas: dict[str, set[str]], root: Path = ROOT) -> None:
    version = release.current_version(root, provider)
    data = load(root / VERIFICATIONS.relative_to(ROOT))
    missing = {c: sorted(s - verified(data, provider, version, c)) for c, s in consumer_shas.items()}
    missing = {c: s for c, s in missing.items() if s}
    if missing:
        raise AssertionError(
            f"contracts/verifications.json does not record that {provider} {version} verified {missing}. "
            f"Record it: PACT_UPDATE=1 .venv/bin/python dev/testrun.py {provider} -- -k contract, and commit "
            f"the file (can-i-deploy reads it)."
        )


def check(root: Path = ROOT) -> list[str]:
    """Every component's working tree against every environment (CI: a change that would break a
    deployed consumer or provider fails)."""
    problems = []
    for environment in sorted(load(root / ENVIRONMENTS.relative_to(ROOT))):
        for name in release.COMPONENTS:
            problems += can_i_deploy(name, "current", environment, root)
    return problems


def record_deploy(environment: str, name: str, version: str, root: Path = ROOT) -> None:
    release.component(name)
    release.parse(version)
    release.ref(root, name, version)  # only released versions are deployed
    path = root / ENVIRONMENTS.relative_to(ROOT)
    data = load(path)
    data.setdefault(environment, {})[name] = version
    save(path, data)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="broker")
    parser.add_argument("--root", type=Path, default=ROOT)
    sub = parser.add_subparsers(dest="command", required=True)
    can = sub.add_parser("can-i-deploy")
    can.add_argument("component")
    can.add_argument("version", help="a released version, or `current` (the working tree)")
    can.add_argument("--env", default=None, help="one environment (default: every recorded one)")
    sub.add_parser("check")
    rec = sub.add_parser("record-deploy")
    rec.add_argument("environment")
    rec.add_argument("component")
    rec.add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "record-deploy":
            record_deploy(args.environment, args.component, args.version, args.root)
            print(f"recorded: {args.component} {args.version} runs in {args.environment} (commit contracts/environments.json)")
            return 0
        if args.command == "check":
            problems = check(args.root)
            what = "every component's working tree"
        else:
            release.component(args.component)
            envs = [args.env] if args.env else sorted(load(args.root / ENVIRONMENTS.relative_to(ROOT))) or []
            problems = [p for env in envs for p in can_i_deploy(args.component, args.version, env, args.root)]
            what = f"{args.component} {args.version}"
    except (release.ReleaseError, subprocess.CalledProcessError) as exc:
        print(f"can-i-deploy: {exc}", file=sys.stderr)
        return 1
    if problems:
        print(f"can-i-deploy: NO, {what}:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"can-i-deploy: yes, {what} is compatible with the versions recorded as deployed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
