// `/watch/{id}`: the lecture whose id is in the path.
"use strict";
const id = decodeURIComponent(location.pathname.split("/").pop());
window.lecture = vidpipe.showLecture(id, document.getElementById("lecture"));
