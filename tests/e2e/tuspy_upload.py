"""tuspy (tus-py-client), a second tus client written apart from
tus-js-client: uploads a file to vidpipe and prints what happened as one
JSON line. tests/e2e/resumable.rs runs it and asserts on the report.

    python3 tuspy_upload.py '{"endpoint", "file", "key", "chunkSize",
                              "metadata", "storage", "stopAfter"}'

The client keeps each upload's URL in `storage`, under the file's
fingerprint, as an application using it would; a second run with the same
file finds it there, asks the server for the offset, and goes on from it.
"""
import json
import sys

from tusclient import client
from tusclient.storage.filestorage import FileStorage

options = json.loads(sys.argv[1])
tus = client.TusClient(options["endpoint"], headers={"Authorization": "Bearer " + options["key"]})
uploader = tus.uploader(
    options["file"],
    chunk_size=options["chunkSize"],
    metadata=options["metadata"],
    store_url=True,
    url_storage=FileStorage(options["storage"]),
)
report = {"resumedFrom": uploader.offset if uploader.url else None}
try:
    if not uploader.url:
        uploader.set_url(uploader.create_url())
        uploader.offset = 0
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        if options.get("stopAfter") and uploader.offset >= options["stopAfter"]:
            report["stopped"] = True
            break
    report["done"] = uploader.offset == size
    headers = uploader.request.response_headers if uploader.request else {}
    report["lectureId"] = headers.get("vidpipe-lecture-id")
except Exception as error:  # the report says what broke; the test fails on it
    report["error"] = f"{type(error).__name__}: {error}"
report["url"] = uploader.url
report["offset"] = uploader.offset
print(json.dumps(report))
