import asyncio
import hashlib

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import engines
from django.views.decorators.csrf import csrf_exempt

FORM = engines["django"].from_string(
    '<form method="post">{% csrf_token %}<input name="name"><button>send</button></form>')


def ping(request):
    return HttpResponse("pong", content_type="text/plain")


def form(request):
    """A CSRF-protected form: GET renders it, POST echoes what was sent."""
    if request.method == "POST":
        return JsonResponse({"name": request.POST.get("name"),
                             "fields": sorted(request.POST)})
    return HttpResponse(FORM.render({}, request))


@csrf_exempt
def upload(request):
    """A multipart upload: the fields and a digest of every file."""
    files = {}
    for name, f in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in f.chunks():
            digest.update(chunk)
        files[name] = {"filename": f.name, "size": f.size, "sha256": digest.hexdigest(),
                       "content_type": f.content_type}
    return JsonResponse({"method": request.method, "fields": dict(request.POST.items()),
                         "files": files})


def _lines(count):
    for i in range(count):
        yield f"line {i:04d} {'x' * 60}\n".encode()


def stream(request):
    """StreamingHttpResponse from a synchronous iterator."""
    return StreamingHttpResponse(_lines(int(request.GET.get("n", "200"))),
                                 content_type="text/plain; charset=utf-8")


def astream(request):
    """StreamingHttpResponse from an asynchronous iterator."""
    async def lines(count):
        for i in range(count):
            if i % 50 == 0:
                await asyncio.sleep(0)
            yield f"line {i:04d} {'x' * 60}\n".encode()
    return StreamingHttpResponse(lines(int(request.GET.get("n", "200"))),
                                 content_type="text/plain; charset=utf-8")
