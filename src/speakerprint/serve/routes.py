"""The service's endpoints and error handlers (see :mod:`speakerprint.serve.app` for the API).

Each endpoint gets the :class:`~speakerprint.serve.state.ServiceState` through the ``Service``
dependency, checks what FastAPI could not (sizes, the threshold, the store), then decodes and
embeds in a worker thread. Errors are raised, never answered in place: the handlers of
:data:`ERROR_HANDLERS` turn each kind into its status and JSON body.

Imports FastAPI: only :func:`~speakerprint.serve.app.create_app` imports this module, once it has
checked that the ``serve`` extra is installed.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time.

from dataclasses import asdict, replace
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.inference.store import StoreError, StoreUnavailableError, check_speaker_name
from speakerprint.serve.observe import REQUEST_ID
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


@router.get("/metrics")
async def metrics_endpoint(service: Service) -> Response:
    body, content_type = service.metrics.exposition()
    return Response(body, media_type=content_type)


@router.post("/embed")
async def embed_endpoint(service: Service, audio: Annotated[UploadFile, File()]) -> dict:
    service.check_uploads([("audio", audio)])

    def job():
        wav = service.decode("audio", audio)
        speech_s = service.speech("audio", audio, wav, required=False)  # reported, not checked
        return wav, speech_s, service.embed(wav)

    wav, speech_s, emb = await service.run(job)
    return {
        "field": "audio",
        "filename": audio.filename,
        "duration_s": len(wav) / service.encoder.sample_rate,
        "speech_s": speech_s,
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
        wav_a, wav_b = service.decode("a", a), service.decode("b", b)
        speech_s = (service.speech("a", a, wav_a), service.speech("b", b, wav_b))
        return service.verify(wav_a, wav_b, threshold, speech_s)

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
    try:
        check_speaker_name(name)  # the store's own check, made before anything is decoded
    except StoreError as e:
        raise ApiError(422, "invalid_field", f"name: {e}", field="name") from None
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
        # Embed everything before opening the store: a bad file, or one with too little
        # speech, leaves the store untouched.
        wavs = [service.decode(field, upload) for field, upload in fields]
        speech_s = [service.speech(f, u, wav) for (f, u), wav in zip(fields, wavs)]
        embeddings = service.embed_many(wavs)
        with service.open_store() as store:
            total = store.enroll(
                name,
                embeddings,
                sources=[source_name(f, u) for f, u in fields],
                model_fingerprint=service.fingerprint,
            )
        return total, speech_s

    total, speech_s = await service.run(job)
    return {"name": name.strip(), "added": len(fields), "total": total, "speech_s": speech_s}


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
        service.require_speakers()
        wav = service.decode("audio", audio)
        speech_s = service.speech("audio", audio, wav)
        emb = service.embed(wav)
        result = service.identify(emb, value, top_k)
        return replace(result, speech_s=speech_s)

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
            except StoreUnavailableError:
                raise  # the server went away: 503, not "no such speaker"
            except StoreError as e:
                raise ApiError(404, "unknown_speaker", str(e), field="name") from None

    count = await service.run(job)
    return {"removed": name, "num_embeddings": count}


# -- errors: each kind of exception, answered once for every endpoint ----------------------------


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):  # the guard's 413 or 408, for a body too large or too slow
        body = exc.detail
    elif exc.status_code == 400:  # the form parser's: too many parts, a part or header too large
        body = {"error": "invalid_form", "detail": f"the multipart form: {exc.detail}"}
    else:
        body = {"error": f"http_{exc.status_code}", "detail": str(exc.detail)}
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


#: Seconds a client is told to wait before retrying when the store cannot be reached.
STORE_RETRY_AFTER_S = 5


async def _store_unavailable(request: Request, exc: StoreUnavailableError) -> JSONResponse:
    # The database is down, restarting or locked: nothing was half-written, a retry may succeed.
    return JSONResponse(
        {"error": "store_unavailable", "detail": str(exc)},
        status_code=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


async def _input_error(request: Request, exc: SpeakerprintError) -> JSONResponse:
    return JSONResponse({"error": "input_error", "detail": str(exc)}, status_code=422)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not the client's doing: uvicorn logs the traceback; the client gets JSON with the
    # request id that the log line of this request carries.
    request_id = REQUEST_ID.get()
    detail = f"internal error ({type(exc).__name__}); see the server's log, request {request_id}"
    body = {"error": "internal_error", "detail": detail, "request_id": request_id}
    return JSONResponse(body, status_code=500, headers={"X-Request-ID": request_id})


#: Exception class -> handler; Starlette picks the most specific class of each exception.
ERROR_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    RequestValidationError: _invalid_request,
    StoreError: _store_error,
    StoreUnavailableError: _store_unavailable,
    SpeakerprintError: _input_error,
    Exception: _internal_error,
}
