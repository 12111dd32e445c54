-- Argo CD health of a canary.dev/v1beta1 Canary (resource.customizations.health.canary.dev_Canary).
-- Healthy: the last release was promoted (Succeeded) or the first one initialized (Initialized).
-- Progressing: a release or the initialization runs, waits for a gate, or the operator has not
-- yet seen the latest spec (metadata.generation ahead of status.observedGeneration).
-- Degraded: the release was rolled back (Failed). Suspended: held by the canary.dev/pause annotation.
local hs = {}

local function promoted_message(status)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == "Promoted" and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for canary-operator to initialize the Canary"
  return hs
end

local phase = status.phase
local message = promoted_message(status) or phase
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "canary-operator has not seen generation " .. tostring(generation) .. " yet"
  return hs
end

local paused = status.paused ~= nil
if obj.metadata.annotations ~= nil and obj.metadata.annotations["canary.dev/pause"] ~= nil then
  paused = true
end

if phase == "Failed" then
  hs.status = "Degraded"
  if status.lastFailure ~= nil and status.lastFailure.message ~= nil then
    message = status.lastFailure.message
  end
  hs.message = message
  return hs
end
if paused and phase ~= "Succeeded" and phase ~= "Initialized" then
  hs.status = "Suspended"
  hs.message = "Paused (canary.dev/pause): " .. message
  return hs
end
if phase == "Succeeded" or phase == "Initialized" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
if phase == "Terminated" then
  hs.status = "Suspended"
  hs.message = "The Canary was deleted; its target is serving again"
  return hs
end
-- Initializing, Waiting, Progressing, WaitingPromotion, Promoting, Finalising, Terminating
hs.status = "Progressing"
if phase == "Waiting" or phase == "WaitingPromotion" then
  message = phase .. ": " .. message
else
  message = message .. " (weight " .. tostring(status.canaryWeight or 0) .. "%)"
end
hs.message = message
return hs
