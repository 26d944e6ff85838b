"""The Gradio page of ``faceveil serve`` (keys, anonymize, recover) and :func:`serve`, which runs it.

Privacy: results reach the browser inside the page (pictures and downloads as ``data:``
URLs), so the server writes no result file; each upload Gradio stores is read into this
browser session's memory and deleted at once; the work of a request happens in a private
folder removed when it ends (:mod:`faceveil.web.service`). Session memory is dropped when
the tab closes, or after :data:`SESSION_SECONDS`, and is capped (:func:`session_limit`); one
upload may be at most :func:`upload_limit` bytes (from the pixel limit), and one that no
event claims is deleted after :data:`UPLOAD_SECONDS`. The server's private temporary folder
(Gradio's upload folder inside) is removed at shutdown. Nothing of a key or a photo is logged.
"""

from __future__ import annotations

import html
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceveil.errors import FaceveilError, NoFaceError, UsageError
from faceveil.imageio import DEFAULT_MAX_PIXELS
from faceveil.envelope import DisclosureToken
from faceveil.keys import Identity, Key, passphrase_warning
from faceveil.models import DiffusionModel
from faceveil.web import service
from faceveil.web.service import Upload

#: How long a browser session's key and uploads are kept in server memory at most.
SESSION_SECONDS = 3600
#: An upload no page event has claimed (taken into a session) is deleted after this many seconds.
UPLOAD_SECONDS = 300
#: How often the upload folder is swept for such unclaimed uploads.
SWEEP_SECONDS = 30
#: The most bytes one upload may have without a pixel limit (``--max-pixels 0``).
MAX_UPLOAD_BYTES = 1 << 30
#: What a session may hold beyond one largest upload (key files, sidecars, a few photos).
SESSION_EXTRA_BYTES = 64 << 20


def upload_limit(max_pixels: int | None) -> int:
    """The largest file the page accepts: an uncompressed RGBA image at the pixel limit plus 1 MiB of header.

    Any photo within ``max_pixels`` fits (JPEG or PNG are far smaller); a veiled PNG too, its
    header holding only the faces. Gradio refuses a larger upload while it arrives (HTTP 413).
    """
    if not max_pixels:
        return MAX_UPLOAD_BYTES
    return min(MAX_UPLOAD_BYTES, 4 * int(max_pixels) + (1 << 20))


def session_limit(max_pixels: int | None) -> int:
    """The most upload bytes one browser session keeps in server memory, all file boxes together."""
    return upload_limit(max_pixels) + SESSION_EXTRA_BYTES


def expire_uploads(upload_folder: Path, max_age: float = UPLOAD_SECONDS, now: float | None = None) -> int:
    """Delete uploads older than ``max_age`` seconds that no event took (and folders left empty); returns how many.

    A file box whose change event never comes (a script, a closed tab, a refused partial
    upload) would otherwise leave its upload on disk until the server stops.
    """
    import time

    now = time.time() if now is None else now
    removed = 0
    root = Path(upload_folder)
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_symlink() or path.is_file():
                if now - path.lstat().st_mtime > max_age:
                    path.unlink()
                    removed += 1
            elif path.is_dir() and not any(path.iterdir()) and now - path.stat().st_mtime > max_age:
                path.rmdir()
        except OSError:
            continue
    return removed


def _sweep_uploads_forever(upload_folder: Path, stop: Any) -> None:
    while not stop.wait(SWEEP_SECONDS):
        expire_uploads(upload_folder)
#: Shown beside every key made or used in the page.
KEY_WARNING = (
    "Download this key and keep it safe and secret: without it nothing can be recovered, "
    "and the server does not keep it (it lives only in this page's session memory)."
)
NO_FACE_OFFER = (
    "To keep such a photo unchanged (with a header, so it recovers), tick "
    "“Continue with photos that have no face” and press Anonymize again."
)
#: The page's style choices (label, value): the model, or a visible replacement with the original sealed.
STYLE_CHOICES = [("New face (model)", "face"), ("Pixelate", "pixelate"), ("Blur", "blur"), ("Solid fill", "solid")]

CSS = """
.fv-error { color: #b00020; background: #fdecee; border: 1px solid #f3b7bf; border-radius: 6px; padding: 8px 12px; margin: 6px 0; }
.fv-ok { color: #0b5d1e; background: #e9f7ec; border: 1px solid #a9dbb4; border-radius: 6px; padding: 8px 12px; margin: 6px 0; }
.fv-warn { color: #7a4b00; background: #fff6e0; border: 1px solid #f0d48a; border-radius: 6px; padding: 8px 12px; margin: 6px 0; }
.fv-pair { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; }
.fv-pair figure { margin: 0; flex: 1 1 280px; }
.fv-pair img, .fv-recovered img { width: 100%; max-width: 512px; height: auto; border-radius: 4px; }
.fv-photo { border-top: 1px solid #ddd; padding: 10px 0; }
.fv-download { display: inline-block; margin: 6px 12px 6px 0; padding: 6px 12px; border-radius: 6px; background: #2563eb; color: white !important; text-decoration: none; }
"""


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _box(kind: str, text: str) -> str:
    role = ' role="alert"' if kind == "fv-error" else ""
    return f'<div class="{kind}"{role}>{_escape(text)}</div>'


def _download(label: str, name: str, data: bytes, mime: str, css: str = "fv-download") -> str:
    return (f'<a class="{css}" download="{_escape(name)}" href="{service.data_url(data, mime)}">'
            f"{_escape(label)}</a>")


def upload_paths(payload: Any) -> list[str]:
    """The server paths in a file box's raw payload (one file's data, a list of them, or nothing)."""
    items = [] if payload is None else payload if isinstance(payload, list) else [payload]
    paths = [item.get("path") if isinstance(item, dict) else item for item in items]
    return [str(p) for p in paths if p]


def keep_uploads(paths: list[str], kept: dict[str, Upload], others: int, upload_folder: Path,
                 limit: int) -> tuple[dict[str, Upload], list[str]]:
    """A file box's uploads in session memory, within ``limit`` bytes with the session's ``others``.

    Uploads already kept stay; new ones are read (and deleted) while they fit; one that
    does not fit is deleted unread and named in the second list, with its size.
    """
    out: dict[str, Upload] = {}
    refused: list[str] = []
    used = others
    root = upload_folder.resolve()
    for path in paths:
        taken = kept.get(path)
        if taken is None:
            file = Path(path).resolve()
            if root not in file.parents or not file.is_file():
                continue
            size = file.stat().st_size
            if used + size > limit:
                file.unlink(missing_ok=True)
                refused.append(f"{Path(path).name} ({size / 2**20:.0f} MiB)")
                continue
            taken = take_upload(path, upload_folder)
            if taken is None:
                continue
        used += len(taken.data)
        out[path] = taken
    return out, refused


def take_upload(path: str | os.PathLike, upload_folder: Path) -> Upload | None:
    """Read a file Gradio stored on upload into memory, then delete it (and its folder, once empty).

    Only files inside Gradio's upload folder are taken: the payload comes from the browser
    unchecked (``preprocess=False``), and no other file of the server may be read.
    """
    root = upload_folder.resolve()
    file = Path(path).resolve()
    if root not in file.parents or not file.is_file():
        return None
    data = file.read_bytes()
    file.unlink(missing_ok=True)
    parent = file.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return Upload(Path(path).name, data)


def photo_progress(progress: Callable[..., Any], name: str, index: int = 0, count: int = 1,
                   waiting: str = "finding faces"):
    """The API's ``progress`` for one photo of the page, shown on Gradio's bar (``progress``, a ``gr.Progress``).

    The CLI's count (:class:`faceveil.progress.FaceCount`): the bar at the model's work done,
    its line ``NAME: face 2 of 3, about 40 s left`` (with ``(photo 2 of 5)`` when several);
    before the faces are known, ``waiting``."""
    from faceveil.progress import FaceCount

    photo = f" (photo {index + 1} of {count})" if count > 1 else ""

    def show(counter: FaceCount) -> None:
        if not counter.evaluations:
            progress((index, count), desc=f"{name}{photo}: {counter.text() or waiting}", unit="photos")
            return
        progress((min(counter.done, counter.evaluations), counter.evaluations), desc=f"{name}{photo}: {counter.text()}",
                 unit="face-evals")

    counter = FaceCount(show)
    show(counter)
    return counter


def _failure(exc: Exception, action: str) -> str:
    """The page's line for a failure: faceveil's own message (the CLI's), else the error's kind only."""
    if isinstance(exc, FaceveilError):
        return str(exc)
    print(f"faceveil serve: unexpected {type(exc).__name__} in {action}", file=sys.stderr)  # no content, no trace
    return f"unexpected error ({type(exc).__name__}) while trying to {action}; nothing was kept"


def _key_status(key: Key | Identity | DisclosureToken | None, origin: str) -> str:
    if key is None:
        return _box("fv-warn", "No key yet: create one or upload your key file (or paste recipients to anonymize).")
    if isinstance(key, DisclosureToken):
        return _box("fv-ok", f"Disclosure token in use: it recovers face {key.face + 1} of one file only ({origin}).")
    if isinstance(key, Identity):
        return _box("fv-ok", f"Identity in use: recipient {key.recipient} ({origin}).")
    return _box("fv-ok", f"Key in use: fingerprint {key.fingerprint} ({origin}).")


def _targets(key: Key | Identity | DisclosureToken | None, recipients: str) -> list:
    """Whom the page anonymizes for: the key or identity in use, and the pasted recipients (``UsageError`` if none)."""
    if isinstance(key, DisclosureToken):
        raise UsageError("a disclosure token only recovers its face: use a key, an identity or recipients to anonymize")
    found = ([key] if key is not None else []) + service.parse_recipients(recipients)
    if not found:
        raise UsageError("No key: create one, upload your key file, or paste a recipient (faceveil1...) first.")
    return found


def build_app(
    model: DiffusionModel,
    work_root: Path,
    upload_folder: Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
):
    """The page as a ``gradio.Blocks``: a key panel, then the Anonymize and Recover tabs."""
    import gradio as gr

    session_bytes = session_limit(max_pixels)

    def sync_files(value: Any, kept: dict[str, Upload] | None, first: dict | None, second: dict | None,
                   third: dict | None) -> tuple[dict[str, Upload], str]:
        """What a file box now holds, in memory: new uploads read (and deleted), removed ones dropped.

        The session's uploads (this box and the three others) stay within ``session_limit``; what does not fit is refused.
        """
        used = sum(len(u.data) for box in (first, second, third) for u in (box or {}).values())
        out, refused = keep_uploads(upload_paths(value), dict(kept or {}), used, upload_folder, session_bytes)
        names = ", ".join(u.name for u in out.values())
        status = f'<div class="fv-ready">{_escape(f"ready: {names}" if out else "")}</div>'
        if refused:
            status += _box("fv-error", f"not kept: {', '.join(refused)}: this page keeps at most "
                                       f"{session_bytes / 2**20:.0f} MiB of files per session; remove some first")
        return out, status

    def create_key(passphrase: str):
        key, data = service.new_key_file(passphrase or None)
        protected = " (protected by your passphrase)" if passphrase else ""
        link = _download(f"Download the key file{protected}", f"faceveil-{key.fingerprint}.key", data,
                         "application/octet-stream")
        origin = "created in this page"
        weak = passphrase_warning(passphrase) if passphrase else None
        notice = f'{_box("fv-warn", KEY_WARNING)}{_box("fv-warn", weak) if weak else ""}{link}'
        return key, origin, _key_status(key, origin), notice

    def use_key(files: dict[str, Upload] | None, passphrase: str, current: Key | None, current_origin: str):
        """Load the uploaded key file; on failure the key in use (if any) stays, and the error shows."""
        uploads = list((files or {}).values())
        if not uploads:
            return current, current_origin, _box("fv-error", "Choose a key file first."), ""
        try:
            key = service.load_key(uploads[-1].data, passphrase or None)
        except Exception as exc:  # noqa: BLE001 - a KeyFileError's message, or the error's kind
            message = _box("fv-error", _failure(exc, "read the key file"))
            return current, current_origin, message + _key_status(current, current_origin), ""
        origin = f"uploaded {uploads[-1].name}"
        return key, origin, _key_status(key, origin), _box("fv-warn", KEY_WARNING)

    def key_file_chosen(value: Any, current: Key | None, origin: str) -> tuple[str, str]:
        pending = _box("fv-warn fv-pending", "Key file chosen: press “Use this key”.") if value else ""
        return pending + _key_status(current, origin), ""

    def anonymize(key: Key | Identity | DisclosureToken | None, photos: dict[str, Upload] | None, allow_no_face: bool,
                  style: str = "face", recipients: str = "", progress=gr.Progress()) -> str:
        try:
            targets = _targets(key, recipients)
        except FaceveilError as exc:
            return _box("fv-error", str(exc))
        uploads = list((photos or {}).values())
        if not uploads:
            return _box("fv-error", "Drop one or more photos first.")
        parts, files = [], []
        names = service.unique_names([service.safe_name(u.name) for u in uploads])
        for index, (upload, name) in enumerate(zip(uploads, names)):
            tick = photo_progress(progress, name, index, len(uploads))
            try:
                veiled = service.anonymize_upload(Upload(name, upload.data), targets, model, work_root,
                                                  allow_no_face=allow_no_face, max_pixels=max_pixels, progress=tick,
                                                  style=style or "face")
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a trace
                offer = _box("fv-warn", NO_FACE_OFFER) if isinstance(exc, NoFaceError) else ""
                parts.append(f'<div class="fv-photo">{_box("fv-error", _failure(exc, "anonymize"))}{offer}</div>')
                continue
            files.append((veiled.name, veiled.png))
            notes = "".join(_box("fv-warn", n) for n in veiled.notes)
            parts.append(
                f'<div class="fv-photo"><h3>{_escape(name)}: {veiled.faces} face(s) anonymized</h3>'
                f'<div class="fv-pair">'
                f'<figure><img alt="before" src="{service.data_url(veiled.before, "image/png")}"><figcaption>before (faces found outlined)</figcaption></figure>'
                f'<figure><img alt="after" src="{service.data_url(veiled.after, "image/png")}"><figcaption>after</figcaption></figure>'
                f"</div>{notes}{_download(f'Download {veiled.name}', veiled.name, veiled.png, 'image/png')}</div>"
            )
        head = ""
        if files:
            archive = service.zip_bytes(files)
            head = _download(f"Download all ({len(files)}) as zip", "faceveil-veiled.zip", archive,
                             "application/zip", "fv-download fv-zip")
        return head + "".join(parts)

    def recover(key: Key | None, images: dict[str, Upload] | None, sidecars: dict[str, Upload] | None,
                progress=gr.Progress()) -> str:
        if key is None:
            return _box("fv-error", "No key: upload the key, identity or disclosure token the photo is for.")
        uploads = list((images or {}).values())
        if not uploads:
            return _box("fv-error", "Choose a veiled photo first.")
        sidecar = next(iter((sidecars or {}).values()), None)
        tick = photo_progress(progress, uploads[-1].name, waiting="opening the header")
        try:
            result = service.recover_upload(uploads[-1], key, work_root, sidecar=sidecar, max_pixels=max_pixels,
                                            progress=tick)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a trace
            return _box("fv-error", _failure(exc, "recover"))
        notes = "".join(_box("fv-warn", n) for n in result.notes)
        return (f'<div class="fv-recovered"><h3>{_escape(result.name)}</h3>'
                f'<img alt="recovered" src="{service.data_url(result.picture, "image/png")}">{notes}'
                f"{_download(f'Download {result.name}', result.name, result.png, 'image/png')}</div>")

    with gr.Blocks(title="faceveil", analytics_enabled=False) as page:
        key_state = gr.State(None, time_to_live=SESSION_SECONDS)
        key_origin = gr.State("")
        key_files = gr.State({}, time_to_live=SESSION_SECONDS)
        photo_files = gr.State({}, time_to_live=SESSION_SECONDS)
        veiled_files = gr.State({}, time_to_live=SESSION_SECONDS)
        sidecar_files = gr.State({}, time_to_live=SESSION_SECONDS)
        gr.Markdown(
            "# faceveil\nReplace every face in your photos by a face of nobody; only the key brings the "
            "originals back. Runs on this computer only: photos and keys stay in memory for your session "
            "and are never stored by the server."
        )
        with gr.Column():
            gr.Markdown("## 1. Key")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("**Create a new key**")
                    new_passphrase = gr.Textbox(label="Passphrase to protect the key file (optional)",
                                                type="password", elem_id="new-key-passphrase")
                    create_button = gr.Button("Create a new key", elem_id="create-key")
                with gr.Column():
                    gr.Markdown("**Or use your key file**")
                    key_upload = gr.File(label="Key file, identity, or disclosure token", elem_id="key-file", height=140)
                    key_ready = gr.HTML("", elem_id="key-file-ready")
                    key_passphrase = gr.Textbox(label="Its passphrase (if it has one)", type="password",
                                                elem_id="key-passphrase")
                    use_button = gr.Button("Use this key", elem_id="use-key")
            key_status = gr.HTML(_key_status(None, ""), elem_id="key-status")
            key_notice = gr.HTML("", elem_id="key-notice")
        with gr.Tabs():
            with gr.Tab("2. Anonymize", id="anonymize-tab"):
                photos = gr.File(label="Photos (JPEG, PNG, WebP, BMP, TIFF)", file_count="multiple", elem_id="photos")
                photos_ready = gr.HTML("", elem_id="photos-ready")
                allow_no_face = gr.Checkbox(label="Continue with photos that have no face (written unchanged)",
                                            elem_id="allow-no-face")
                style = gr.Dropdown(STYLE_CHOICES, value="face", label="How faces are replaced (all recover exactly with the key)",
                                    elem_id="style")
                recipients = gr.Textbox(label="Recipients (faceveil1..., one per line, optional): they recover the photos; "
                                              "with recipients alone this page needs no key and cannot recover them",
                                        lines=2, elem_id="recipients")
                anonymize_button = gr.Button("Anonymize", variant="primary", elem_id="anonymize")
                results = gr.HTML("", elem_id="results")
            with gr.Tab("3. Recover", id="recover-tab"):
                veiled = gr.File(label="Veiled photo (.veiled.png, or a JPEG/WebP with its sidecar)", elem_id="veiled")
                veiled_ready = gr.HTML("", elem_id="veiled-ready")
                sidecar = gr.File(label="Sidecar .veil (only for a JPEG or WebP)", elem_id="sidecar", height=140)
                sidecar_ready = gr.HTML("", elem_id="sidecar-ready")
                recover_button = gr.Button("Recover", variant="primary", elem_id="recover")
                recovered = gr.HTML("", elem_id="recovered")

        # preprocess=False: Gradio's File preprocessing leaves an empty temporary file per event behind
        quiet = {"show_progress": "hidden", "queue": False, "preprocess": False}
        boxes = ((key_upload, key_files, key_ready), (photos, photo_files, photos_ready),
                 (veiled, veiled_files, veiled_ready), (sidecar, sidecar_files, sidecar_ready))
        for box, kept, status in boxes:
            others = [other for _, other, _ in boxes if other is not kept]
            box.change(sync_files, [box, kept, *others], [kept, status], **quiet)
        # new inputs clear what was shown for the old ones
        key_upload.change(key_file_chosen, [key_upload, key_state, key_origin], [key_status, key_notice], **quiet)
        photos.change(lambda: "", None, results, **quiet)
        veiled.change(lambda: "", None, recovered, **quiet)
        sidecar.change(lambda: "", None, recovered, **quiet)
        create_button.click(create_key, new_passphrase, [key_state, key_origin, key_status, key_notice])
        use_button.click(use_key, [key_files, key_passphrase, key_state, key_origin],
                         [key_state, key_origin, key_status, key_notice])
        anonymize_button.click(anonymize, [key_state, photo_files, allow_no_face, style, recipients], results)
        recover_button.click(recover, [key_state, veiled_files, sidecar_files], recovered)
    return page


def _stop_on_sigterm() -> None:
    """SIGTERM closes the server like Ctrl+C, so the private folder is removed."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    model: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the page until Ctrl+C (or SIGTERM); offline, Gradio's analytics and share links off."""
    root = Path(tempfile.mkdtemp(prefix="faceveil-serve-"))  # mode 0700
    uploads, work = root / "uploads", root / "work"
    uploads.mkdir(mode=0o700)
    work.mkdir(mode=0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)  # read when gradio is imported: set first
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import threading

    stop_sweeping = threading.Event()
    try:
        from faceveil.models import load_model

        page = build_app(load_model(model), work, uploads, max_pixels=max_pixels)
        threading.Thread(target=_sweep_uploads_forever, args=(uploads, stop_sweeping), daemon=True,
                         name="faceveil-upload-expiry").start()
        page.queue(default_concurrency_limit=1)
        if sys.platform != "win32":
            _stop_on_sigterm()
        if host not in ("127.0.0.1", "localhost", "::1"):
            announce(f"faceveil: warning: listening on {host}: anyone who can reach this machine can use the page")
        try:
            page.launch(
                server_name=host, server_port=port, share=False, inbrowser=False, quiet=True, show_error=False,
                ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, prevent_thread_lock=True,
                theme="default", css=CSS, footer_links=[], run_history=False,  # no copies in the browser either
                max_file_size=upload_limit(max_pixels),  # refused while it arrives, with a message
            )
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from None
        announce(f"faceveil: serving http://{'[' + host + ']' if ':' in host else host}:{port} "
                 "(Ctrl+C to stop); keys and photos are never stored")
        try:
            page.block_thread()
        finally:
            page.close()
    finally:
        stop_sweeping.set()
        shutil.rmtree(root, ignore_errors=True)
