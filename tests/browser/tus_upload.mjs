// Uploads a file to vidpipe's tus endpoint with tus-js-client, the client
// browsers and Uppy use, running in Node.js. Driven by tests/e2e/resumable.rs.
//
//   node tus_upload.mjs '{"endpoint": "http://127.0.0.1:8080/api/uploads",
//     "file": "/path/video.mp4", "key": "vp_...", "metadata": {...},
//     "chunkSize": 262144, "stopAfter": 500000, "uploadUrl": null}'
//
// With `stopAfter`, the upload is aborted once that many bytes were sent
// (mid-request, as a dropped connection would); with `uploadUrl`, it resumes
// that upload. Prints one JSON line: {url, offset, lectureId} or {error}.
import { readFileSync } from "node:fs";
import * as tus from "tus-js-client";

const options = JSON.parse(process.argv[2]);
const data = readFileSync(options.file);
let lectureId = null;
let offset = 0;

const report = (extra) => {
  console.log(JSON.stringify({ url: upload.url, offset, lectureId, ...extra }));
};

const upload = new tus.Upload(data, {
  endpoint: options.endpoint,
  uploadUrl: options.uploadUrl ?? null,
  chunkSize: options.chunkSize ?? Infinity,
  retryDelays: null,
  headers: options.key ? { Authorization: `Bearer ${options.key}` } : {},
  metadata: options.metadata ?? {},
  onAfterResponse: (_request, response) => {
    lectureId = response.getHeader("Vidpipe-Lecture-Id") || lectureId;
    const at = response.getHeader("Upload-Offset");
    if (at) offset = Number(at);
  },
  onProgress: (sent) => {
    if (options.stopAfter && sent >= options.stopAfter && !upload._stopping) {
      upload._stopping = true;
      upload.abort().then(() => report({ stopped: true }));
    }
  },
  onSuccess: () => report({ done: true }),
  onError: (error) => report({ error: String(error) }),
});
upload.start();
