"""The service's endpoints and error handlers (see :mod:`speakerprint.serve.app` for the API).

Each endpoint gets the :class:`~speakerprint.serve.state.ServiceState` through the ``Service``
dependency, checks what FastAPI could not (sizes, the threshold, the store), then decodes and
embeds in a worker thread. Errors are raised, never answered in place: the handlers of
:data:`ERROR_HANDLERS` turn each kind into its status and JSON body.

Imports FastAPI: only :func:`~speakerprint.serve.app.create_app` imports this module, once it has
checked that the ``serve`` extra is installed.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time.

from dataclasses import asdict
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.inference.store import StoreError
from speakerprint.serve.state import ApiError, ServiceState, source_name

__all__ = ["ERROR_HANDLERS", "router"]


async def _service(request: Request) -> ServiceState:
    return request.app.state.service


#: The app state, as an endpoint parameter.
Service = Annotated[ServiceState, Depends(_service)]

# The endpoints keep the names they had as closures of create_app: FastAPI derives the OpenAPI
# operation ids and form schema names from them.
router = APIRouter()


@router.get("/health")
async def health(service: Service) -> dict:
    from speakerprint import __version__

    try:
        threshold, source = service.encoder.bundle.decision_threshold()
    except BundleError:  # no measured threshold
        threshold = source = None
    return {
        "status": "ok",
        "version": __version__,
        "model": service.model_path,
        "model_fingerprint": service.fingerprint,
        "embed_dim": service.encoder.embed_dim,
        "sample_rate": service.encoder.sample_rate,
        "threshold": threshold,
        "threshold_source": source,
        "store": service.store_name,
        "api_key_required": service.api_key_required,
        "limits": asdict(service.limits),
    }


@router.post("/embed")
async def embed_endpoint(service: Service, audio: Annotated[UploadFile, File()]) -> dict:
    service.check_uploads([("audio", audio)])

    def job():
        wav = service.decode("audio", audio)
        return wav, service.embed(wav)

    wav, emb = await service.run(job)
    return {
        "field": "audio",
        "filename": audio.filename,
        "duration_s": len(wav) / service.encoder.sample_rate,
        "embed_dim": int(emb.shape[0]),
        "model_fingerprint": service.fingerprint,
        "embedding": emb.astype(np.float64).tolist(),
    }


@router.post("/verify")
async def verify_endpoint(
    service: Service,
    a: Annotated[UploadFile, File()],
    b: Annotated[UploadFile, File()],
    threshold: Annotated[float | None, Form()] = None,
) -> dict:
    service.check_uploads([("a", a), ("b", b)])
    service.decision_threshold(threshold)  # a bad or missing threshold is refused before decoding

    def job():
        return service.verify(service.decode("a", a), service.decode("b", b), threshold)

    result = await service.run(job)
    return {
        "a": source_name("a", a),
        "b": source_name("b", b),
        **result.to_dict(),
        "decision": "same speaker" if result.same_speaker else "different speakers",
    }


@router.post("/enroll")
async def enroll_endpoint(
    service: Service, name: Annotated[str, Form()], audio: Annotated[list[UploadFile], File()]
) -> dict:
    service.require_store()
    if not name.strip():
        raise ApiError(422, "invalid_field", "name must not be empty", field="name")
    limit = service.limits.max_enroll_files
    if len(audio) > limit:
        raise ApiError(
            413,
            "too_many_uploads",
            f"audio: {len(audio)} recordings, over the limit of {limit}",
            field="audio",
        )
    fields = [(f"audio[{i}]", upload) for i, upload in enumerate(audio)]
    service.check_uploads(fields)

    def job():
        # Embed everything before opening the store: a bad file leaves the store untouched.
        embeddings = [service.embed(service.decode(field, upload)) for field, upload in fields]
        with service.open_store() as store:
            return store.enroll(
                name,
                embeddings,
                sources=[source_name(f, u) for f, u in fields],
                model_fingerprint=service.fingerprint,
            )

    total = await service.run(job)
    return {"name": name.strip(), "added": len(fields), "total": total}


@router.post("/identify")
async def identify_endpoint(
    service: Service,
    audio: Annotated[UploadFile, File()],
    top_k: Annotated[int, Form(ge=1)] = 5,
    threshold: Annotated[float | None, Form()] = None,
) -> dict:
    service.require_store()
    service.check_uploads([("audio", audio)])
    value, source = service.decision_threshold(threshold)

    def job():
        with service.open_store() as store:
            if not store.speakers():
                raise ApiError(
                    409,
                    "no_speakers",
                    f"the store {service.store_name} has no speakers: enroll first",
                )
        emb = service.embed(service.decode("audio", audio))
        with service.open_store() as store:
            return store.identify(
                emb, threshold=value, model_fingerprint=service.fingerprint, top_k=top_k
            )

    result = await service.run(job)
    return {
        "file": source_name("audio", audio),
        **result.to_dict(),
        "threshold_source": source,
        "decision": result.speaker if result.known else "unknown",
    }


@router.get("/speakers")
async def speakers_endpoint(service: Service) -> dict:
    service.require_store()

    def job():
        with service.open_store() as store:
            return store.speakers()

    entries = await service.run(job)
    return {
        "store": service.store_name,
        "count": len(entries),
        "speakers": [asdict(e) for e in entries],
    }


@router.delete("/speakers/{name}")
async def remove_endpoint(service: Service, name: str) -> dict:
    service.require_store()

    def job():
        with service.open_store() as store:
            try:
                return store.remove(name)
            except StoreError as e:
                raise ApiError(404, "unknown_speaker", str(e), field="name") from None

    count = await service.run(job)
    return {"removed": name, "num_embeddings": count}


# -- errors: each kind of exception, answered once for every endpoint ----------------------------


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    body = (
        exc.detail
        if isinstance(exc.detail, dict)  # the guard's 413 for a body streamed past its limit
        else {"error": f"http_{exc.status_code}", "detail": str(exc.detail)}
    )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    fields = [str(e["loc"][-1]) for e in errors if e.get("loc")]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in errors
    )
    body = {"error": "invalid_request", "detail": detail}
    if fields:
        body["field"] = fields[0]
    return JSONResponse(body, status_code=422)


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    # The store changed under the server (replaced, made for another model...).
    return JSONResponse({"error": "store_error", "detail": str(exc)}, status_code=409)


async def _input_error(request: Request, exc: SpeakerprintError) -> JSONResponse:
    return JSONResponse({"error": "input_error", "detail": str(exc)}, status_code=422)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not the client's doing: uvicorn logs the traceback; the client gets JSON.
    detail = f"internal error ({type(exc).__name__}); see the server's log"
    return JSONResponse({"error": "internal_error", "detail": detail}, status_code=500)


#: Exception class -> handler; Starlette picks the most specific class of each exception.
ERROR_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    RequestValidationError: _invalid_request,
    StoreError: _store_error,
    SpeakerprintError: _input_error,
    Exception: _internal_error,
}
