// The browser's webcam: a mirrored <video> to look at, and JPEG frames fitted to the network's input.

export class Camera {
  /** video: the <video> element to play into; size: the network's input [height, width]. */
  constructor(video, size) {
    this.video = video;
    this.canvas = document.createElement('canvas');
    [this.canvas.height, this.canvas.width] = size;
    this.stream = null;
  }

  get running() {
    return this.stream !== null;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error('this browser gives no camera access here');
    this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    this.video.srcObject = this.stream;
    this.video.hidden = false;
    await this.video.play();
    if (!this.video.videoWidth) {
      await new Promise((resolve) => this.video.addEventListener('loadeddata', resolve, { once: true }));
    }
  }

  stop() {
    this.stream?.getTracks().forEach((track) => track.stop());
    this.stream = null;
    this.video.srcObject = null;
    this.video.hidden = true;
  }

  /** Pause (freeze) or resume the picture on screen. */
  freeze(frozen) {
    if (frozen) this.video.pause();
    else this.video.play().catch(() => {});
  }

  /** The current frame, mirrored, centre-cropped ('crop') or stretched ('stretch') to the input size, as JPEG. */
  frame(resize) {
    const { videoWidth: vw, videoHeight: vh } = this.video;
    const { width, height } = this.canvas;
    let [sx, sy, sw, sh] = [0, 0, vw, vh];
    if (resize !== 'stretch') {
      const scale = Math.min(vw / width, vh / height);
      [sw, sh] = [width * scale, height * scale];
      [sx, sy] = [(vw - sw) / 2, (vh - sh) / 2];
    }
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(-1, 0, 0, 1, width, 0); // mirror, like looking into a mirror
    ctx.drawImage(this.video, sx, sy, sw, sh, 0, 0, width, height);
    return new Promise((resolve, reject) => this.canvas.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new Error('could not encode the camera frame'))), 'image/jpeg', 0.85));
  }
}
