"""A loopback stand-in for the part of the Hugging Face Hub API that publishing and loading use.

In-process (``http.server`` on 127.0.0.1 in a thread), in memory, no authentication. It speaks
what ``HfApi(endpoint=...)`` and ``hf_hub_download``/``snapshot_download`` send (huggingface_hub
2.x; see ``hf_api.py``, ``_commit_api.py``, ``_upload_pipeline.py``, ``file_download.py``):

    POST /api/repos/create                           create_repo (409 when it exists)
    POST /api/validate-yaml                          upload_folder's README.md front-matter check
    POST /api/{type}s/{repo}/branch/{branch}         create_branch
    POST /api/{type}s/{repo}/preupload/{rev}         upload modes: always "regular", so every file
                                                     travels base64-encoded inside the commit
    POST /api/{type}s/{repo}/commit/{rev}            the NDJSON commit
    POST /api/spaces/{repo}/hardware                 request_space_hardware
    GET  /api/{type}s/{repo}/revision/{rev}          repo_info
    GET  /api/{type}s/{repo}/tree/{rev}              list_repo_tree / list_repo_files (one page)
    HEAD, GET /[{type}s/]{repo}/resolve/{rev}/{path} file metadata and download

A new repo starts, as on the Hub, with one commit holding ``.gitattributes``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
API = re.compile(r"/api/(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)/"
                 r"(?P<action>preupload|commit|branch|revision|tree|hardware)(?:/(?P<rest>.*))?")
RESOLVE = re.compile(r"/(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")


def blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    sdk: str | None = None
    hardware: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: bytes}
    received: list[dict[str, bytes]] = field(default_factory=list)  # files added by each commit request

    def resolve(self, revision: str) -> str | None:
        return self.branches.get(revision) or (revision if revision in self.commits else None)

    def commit(self, branch: str, tree: dict[str, bytes], summary: str) -> str:
        parent = self.branches.get(branch, "")
        listing = sorted((path, blob_id(data)) for path, data in tree.items())
        sha = hashlib.sha1(json.dumps([parent, listing, summary]).encode()).hexdigest()
        self.commits[sha] = tree
        self.branches[branch] = sha
        return sha


class HubServer:
    """``with HubServer() as hub:`` serves at ``hub.url``; ``hub.repos[(type, repo_id)]`` holds the state."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()
        self.requests: list[str] = []  # "METHOD path", in order

    def __enter__(self) -> Self:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer

    def log_message(self, *args) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _reply(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None,
               *, send_body: bool = True) -> None:
        if not isinstance(body, bytes):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    # ------------------------------------------------------------------ verbs
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(f"POST {path}")
        with self.hub.lock:
            if path == "/api/repos/create":
                return self._create(json.loads(self._body()))
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(self._body())["content"])
            match = API.fullmatch(path)
            if match is None or match["action"] in ("revision", "tree"):
                return self._error(404, "NotFound", f"no route for POST {path}")
            repo = self._repo(match["type"], match["repo"])
            if repo is None:
                return None
            rest = unquote(match["rest"] or "")
            return getattr(self, f"_{match['action']}")(repo, rest, self._body())

    def do_GET(self, send_body: bool = True) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(f"{'GET' if send_body else 'HEAD'} {path}")
        with self.hub.lock:
            match = API.fullmatch(path)
            if match is not None and match["action"] in ("revision", "tree"):
                repo = self._repo(match["type"], match["repo"])
                if repo is None:
                    return None
                revision = unquote((match["rest"] or "main").split("/", 1)[0])  # tree/{rev}[/{path}]
                commit = repo.resolve(revision)
                if commit is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                tree = repo.commits[commit]
                if match["action"] == "revision":
                    return self._reply(200, {"id": repo.id, "sha": commit, "private": repo.private,
                                             "siblings": [{"rfilename": name} for name in sorted(tree)]})
                return self._reply(200, [{"type": "file", "path": name, "size": len(data), "oid": blob_id(data)}
                                         for name, data in sorted(tree.items())])
            match = RESOLVE.fullmatch(path)
            if match is None:
                return self._error(404, "NotFound", f"no route for GET {path}")
            repo = self._repo(match["type"] or "model", match["repo"])
            if repo is None:
                return None
            commit = repo.resolve(unquote(match["rev"]))
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {match['rev']}")
            data = repo.commits[commit].get(unquote(match["path"]))
            if data is None:
                self.send_response(404)
                for key, value in {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                                   "Content-Length": "0"}.items():
                    self.send_header(key, value)
                return self.end_headers()
            return self._reply(200, data, {"X-Repo-Commit": commit, "ETag": f'"{blob_id(data)}"',
                                           "Content-Type": "application/octet-stream"}, send_body=send_body)

    def do_HEAD(self) -> None:
        self.do_GET(send_body=False)

    # ------------------------------------------------------------------ actions
    def _create(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:  # the Hub's 409 also carries the url
            message = "You already created this repo"
            return self._reply(409, {"error": message, "url": url}, {"X-Error-Code": "RepoExists",
                                                                       "X-Error-Message": message})
        repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")),
                    sdk=payload.get("sdk"))
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.hub.repos[(repo_type, repo_id)] = repo
        return self._reply(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, content: str) -> None:
        """Front matter must be a YAML mapping between ``---`` lines (the Hub checks more)."""
        import yaml

        parts = content.split("---\n", 2)
        try:
            valid = parts[0] == "" and len(parts) == 3 and isinstance(yaml.safe_load(parts[1]), dict)
        except yaml.YAMLError:
            valid = False
        if not valid:
            return self._reply(400, {"errors": [{"message": "no valid YAML front matter"}]},
                               {"X-Error-Code": "BadRequest"})
        return self._reply(200, {"errors": [], "warnings": []})

    def _branch(self, repo: Repo, branch: str, body: bytes) -> None:
        if branch in repo.branches:
            return self._error(409, "BranchExists", f"Reference {branch} already exists")
        start = repo.resolve((json.loads(body or b"{}")).get("startingPoint") or "main")
        repo.branches[branch] = start
        return self._reply(200, {})

    def _preupload(self, repo: Repo, revision: str, body: bytes) -> None:
        files = json.loads(body)["files"]
        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                           for f in files]})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        tree, added = dict(repo.commits[repo.branches[revision]]), {}
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {name: data for name, data in tree.items() if not name.startswith(prefix)}
            else:  # lfsFile etc.: never asked for (preupload answers "regular")
                return self._error(400, "BadRequest", f"unsupported commit operation {key}")
        repo.received.append(added)
        sha = repo.commit(revision, tree, lines[0]["value"]["summary"])
        return self._reply(200, {"commitOid": sha, "pullRequestUrl": None,
                                 "commitUrl": f"{self.hub.url}/{URL_PREFIX[repo.type]}{repo.id}/commit/{sha}"})

    def _hardware(self, repo: Repo, _: str, body: bytes) -> None:
        repo.hardware = json.loads(body)["flavor"]
        return self._reply(200, {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware}})
