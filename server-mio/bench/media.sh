# Sourced by the benchmarks: makes the input in "$work" and sets MEDIA for itg-load.
# 10 s of 1280x720 H.264 at 2.5 Mbit/s (keyframe every 2 s) and Opus, looped by the sender.
ffmpeg -loglevel error -f lavfi -i "testsrc2=size=1280x720:rate=30" -t 10 -c:v libx264 \
    -profile:v baseline -preset veryfast -tune zerolatency -g 60 -b:v 2500k -maxrate 2500k \
    -bufsize 2500k -pix_fmt yuv420p -bsf:v h264_mp4toannexb -f h264 "$work/in.h264"
ffmpeg -loglevel error -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 10 -c:a libopus \
    -b:a 64k -frame_duration 20 -ac 2 "$work/in.ogg"
MEDIA=(--video "$work/in.h264" --audio "$work/in.ogg")
