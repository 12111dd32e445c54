-- Argo CD actions of a Canary (resource.customizations.actions.canary.dev_Canary): which of
-- promote, abort, retry, pause, resume the operator would accept now (docs/cli.md). The
-- operator decides in the end; a disabled action here is only a hint.
local actions = {}
local phase = ""
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local paused = obj.status ~= nil and obj.status.paused ~= nil
if obj.metadata.annotations ~= nil and obj.metadata.annotations["canary.dev/pause"] ~= nil then
  paused = true
end
local running = phase == "Waiting" or phase == "Progressing" or phase == "WaitingPromotion"
actions["promote"] = {["disabled"] = (not running) or paused}
actions["abort"] = {["disabled"] = not running}
actions["retry"] = {["disabled"] = phase ~= "Failed" or paused}
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
return actions
