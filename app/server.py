"""`rag serve`: the web UI at / and the OpenAI-compatible API at /v1, in one process sharing one set of models."""

import logging
import os
import shutil
import threading

import gradio as gr
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from gradio.routes import App as GradioApp
from starlette.routing import Mount

from app.api import add_api
from app.ui import CSS, build_ui
from rag.answer import fixed_parts
from rag.assistant import Assistant
from rag.chat_models import KeepsPromptState, LLMUnavailable
from rag.errors import BadInput, EmptyCollection, ServiceUnavailable
from rag.settings import Settings

log = logging.getLogger("rag.serve")


def create_app(assistant: Assistant) -> FastAPI:
    settings = assistant.settings
    # Gradio stores uploads under GRADIO_TEMP_DIR (read when the UI is built): keep them inside the data directory.
    uploads = settings.data_path / "uploads"
    shutil.rmtree(uploads, ignore_errors=True)  # what a server that died mid-upload left
    uploads.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    app = FastAPI(title="Research assistant", docs_url=None, redoc_url=None)
    add_api(app, assistant)
    logins = settings.server.ui_logins()
    blocks = build_ui(assistant)

    @app.get("/pdf/{collection}/{paper_id:path}", include_in_schema=False)
    def pdf(collection: str, paper_id: str, request: Request) -> FileResponse:
        """A paper's PDF, for a source card's page link: looked up by collection and paper id in the store (never a
        path the client names), and only with the UI's login when it has one."""
        if logins and not _logged_in(app, request):
            raise HTTPException(401, "log in to the web UI first")
        try:
            path = assistant.pdf(assistant.settings_for(collection=collection), paper_id)
        except (BadInput, EmptyCollection):
            path = None
        if path is None:
            raise HTTPException(404, "no PDF is kept for that paper in that collection")
        return FileResponse(path, media_type="application/pdf", content_disposition_type="inline")

    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=logins or None,
        css=CSS,
        footer_links=[],
        show_error=True,
        ssr_mode=False,
        max_file_size=int(settings.server.max_upload_mb * 1_000_000),
    )


def _logged_in(app: FastAPI, request: Request) -> bool:
    """Whether the request carries a session of the UI's login: Gradio's own cookie, looked up in the token table of
    the Gradio app mounted on ``app``."""
    ui = next(
        (route.app for route in app.routes if isinstance(route, Mount) and isinstance(route.app, GradioApp)), None
    )
    if ui is None:
        return False
    token = request.cookies.get(f"access-token-{ui.cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{ui.cookie_id}"
    )
    return token is not None and ui.tokens.get(token) is not None


def warm_up(assistant: Assistant) -> None:
    """Load the default collection's indexes and the chat model before the first question, not during it; then, while
    the server starts, evaluate the fixed part of the answer prompts (the first answer would wait for it)."""
    try:
        assistant.finder(assistant.settings)
        model = assistant.model(assistant.settings)
    except (BadInput, ServiceUnavailable, LLMUnavailable) as error:
        log.warning("not preloaded: %s", error)
        return
    if isinstance(model, KeepsPromptState):

        def keep() -> None:
            for messages in fixed_parts(assistant.settings):
                model.keep_fixed_part(messages)

        threading.Thread(target=keep, name="fixed-prompt-parts", daemon=True).start()


def serve(settings: Settings, host: str, port: int) -> None:
    assistant = Assistant(settings)
    warm_up(assistant)
    app = create_app(assistant)
    print(
        f"Research assistant: UI at http://{host}:{port}/ · OpenAI-compatible API at http://{host}:{port}/v1",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
